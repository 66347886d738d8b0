"""Score lesion masks made by other tools (nnU-Net, LST-AI, SAMSEG, your own) like msnb's models.

:func:`match_predictions` pairs the mask files of a folder with a dataset's scans, by subject
and timepoint read from each file's name, and reports what it could not pair;
:func:`evaluate_predictions` checks each mask against its scan's grid and scores it with
:func:`msnb.metrics.compute_metrics`, giving rows of the results schema
(:data:`msnb.metrics.RESULT_COLUMNS`) whose ``model_id`` is the method's label.
``msnb evaluate`` is the command line of both; a study file's ``external`` entry runs them as
jobs of the study (``04_evaluate_external``).

A file's subject and timepoint come from, in this order:

1. ``pattern``: a regular expression searched in the file's path relative to the folder, with
   named groups ``subject`` (required) and ``timepoint`` (optional);
2. a BIDS name, ``sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>.nii[.gz]`` (a
   derivatives folder: ``sub-01/ses-01/anat/sub-01_ses-01_desc-lesion_mask.nii.gz``); only the
   suffixes of :data:`BIDS_MASK_SUFFIXES` are masks (``probseg`` and others are listed as extra
   files). A label is compared with the scan's subject without its punctuation
   (``sub-0803`` is MSSEG's ``08_03``), numbers by value (``ses-1`` is timepoint ``01``);
3. any other name, as nnU-Net writes its predictions (``<case identifier>.nii.gz``): split into
   words and numbers (``MSSEG_08_03`` -> ``msseg 8 3``), it belongs to the scan whose subject
   and timepoint end it (``ISBI_training01_02``: subject 01 at timepoint 02), or whose subject
   alone ends it when that subject has one scan.

When several scans fit a file, the one naming the timepoint wins; a tie is an error. Files
outside ``glob``, and files that are not NIfTI, are ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from msnb.datasets import DATASETS, Scan, load_label
from msnb.files import atomic_path
from msnb.metrics import compute_metrics, result_row, results_frame
from msnb.nifti import (
    AFFINE_ATOL_MM,
    NiftiError,
    Volume,
    canonicalize,
    check_output_dir,
    load_image,
    load_mask,
    read_nifti,
)

__all__ = [
    "BIDS_MASK_SUFFIXES",
    "EXTERNAL_ARCHITECTURE",
    "PREDICTION_GLOB",
    "PredictionMatch",
    "check_complete",
    "compile_pattern",
    "evaluate_predictions",
    "load_prediction",
    "match_predictions",
    "prediction_files",
    "write_demo_predictions",
]

#: The files a prediction folder is searched for (relative to it; ``**`` is any depth).
PREDICTION_GLOB = "**/*.nii*"
#: BIDS suffixes of binary masks (``_mask``; ``_dseg``, a discrete segmentation).
BIDS_MASK_SUFFIXES = ("mask", "dseg")
#: The ``architecture`` column of an external method's rows: not one of msnb's, so its rows
#: are never taken for the default models of the paper's tables.
EXTERNAL_ARCHITECTURE = "external"
_NIFTI = re.compile(r"\.nii(?:\.gz)?$", re.IGNORECASE)
_BIDS = re.compile(
    r"sub-(?P<subject>[A-Za-z0-9]+)(?:_ses-(?P<timepoint>[A-Za-z0-9]+))?"
    r"(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*_(?P<suffix>[A-Za-z0-9]+)\.nii(?:\.gz)?"
)


class MatchError(ValueError):
    """Prediction files that cannot be paired with scans (a tie, two files for one scan)."""


@dataclasses.dataclass
class PredictionMatch:
    """The prediction files of a folder paired with a dataset's scans.

    Attributes
    ----------
    folder : Path
        The prediction folder.
    matched : dict of Scan to Path
        Each scan with a prediction, and its file, in the scans' order.
    missing : list of Scan
        Scans without a prediction file.
    extra : list of (Path, str)
        Files paired with no scan, and why.
    naming : dict of Path to str
        How each matched file's name was read: ``"pattern"``, ``"bids"`` or ``"nnunet"``.
    """

    folder: Path
    matched: dict[Scan, Path]
    missing: list[Scan]
    extra: list[tuple[Path, str]]
    naming: dict[Path, str] = dataclasses.field(default_factory=dict)

    def report(self) -> str:
        """Lines saying what was matched, which scans lack a file and which files are extra."""
        n = len(self.matched) + len(self.missing)
        lines = [f"{self.folder}: {len(self.matched)} of {n} scans have a prediction"]
        lines += [f"  missing: {s.scan_id} (no file for it)" for s in self.missing]
        lines += [f"  extra: {self._rel(p)}: {why}" for p, why in self.extra]
        return "\n".join(lines)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()


def prediction_files(folder: str | os.PathLike, glob: str = PREDICTION_GLOB) -> list[Path]:
    """The NIfTI files under ``folder`` that ``glob`` selects, sorted.

    Raises
    ------
    FileNotFoundError
        ``folder`` is missing or not a folder.
    ValueError
        ``glob`` is empty, absolute or not a valid pattern.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"{folder}: prediction folder {problem}")
    if not glob or Path(glob).is_absolute():
        raise ValueError(f"prediction glob {glob!r} must be a non-empty path relative to {folder}")
    try:
        found = folder.glob(glob)
        return sorted(p for p in found if p.is_file() and _NIFTI.search(p.name))
    except (ValueError, NotImplementedError) as exc:
        raise ValueError(f"prediction glob {glob!r} is not a valid pattern: {exc}") from exc


def _compact(text: str) -> str:
    """``text`` without punctuation, lower case, a number without its leading zeros."""
    out = re.sub(r"[^a-z0-9]", "", str(text).lower())
    return str(int(out)) if out.isdigit() else out


def _words(text: str) -> list[str]:
    """``text`` as words and numbers (``"MSSEG_08_03"`` -> ``["msseg", "8", "3"]``)."""
    return [str(int(w)) if w.isdigit() else w for w in re.findall(r"[a-z]+|\d+", text.lower())]


def compile_pattern(pattern: str | None) -> re.Pattern | None:
    """A prediction pattern compiled (None for none); ValueError naming a bad one."""
    if not pattern:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"prediction pattern {pattern!r} is not a valid regular expression: {exc}"
        ) from exc
    if "subject" not in regex.groupindex:
        raise ValueError(f"prediction pattern {pattern!r} has no (?P<subject>...) group")
    return regex


def _candidates(rel: str, scans: Sequence[Scan], single: set[str], regex) -> tuple[str, list, str]:
    """How ``rel`` names its scan and the scans that fit it, best first.

    Returns ``(naming, [(score, scan), ...], why_none)``; a score of 2 names subject and
    timepoint, 1 the subject alone (of a subject with one scan).
    """
    name = rel.rsplit("/", 1)[-1]
    if regex is not None or _BIDS.fullmatch(name):
        naming = "pattern" if regex is not None else "bids"
        m = regex.search(rel) if regex is not None else _BIDS.fullmatch(name)
        if m is None:
            return naming, [], "does not match the prediction pattern"
        if naming == "bids" and m["suffix"].lower() not in BIDS_MASK_SUFFIXES:
            return naming, [], f"BIDS suffix _{m['suffix']} is not a mask ({BIDS_MASK_SUFFIXES})"
        subject, timepoint = _compact(m["subject"]), m.groupdict().get("timepoint")
        fits = []
        for s in scans:
            if _compact(s.subject) != subject:
                continue
            if timepoint is not None and _compact(timepoint) == _compact(s.timepoint):
                fits.append((2, s))
            elif timepoint is None and s.subject in single:
                fits.append((1, s))
        why = f"no scan of subject {m['subject']}" + (f" at {timepoint}" if timepoint else "")
        return naming, fits, why
    words = _words(_NIFTI.sub("", name))
    fits = []
    for s in scans:
        subject = _words(s.subject)
        full = subject + _words(s.timepoint)
        if words[-len(full) :] == full:
            fits.append((2, s))
        elif s.subject in single and subject and words[-len(subject) :] == subject:
            fits.append((1, s))
    return "nnunet", fits, "its name ends with no scan's subject (and timepoint)"


def match_predictions(
    scans: Sequence[Scan],
    folder: str | os.PathLike,
    *,
    pattern: str | None = None,
    glob: str = PREDICTION_GLOB,
) -> PredictionMatch:
    """Pair the prediction files of ``folder`` with ``scans`` (see the module docstring).

    Parameters
    ----------
    scans : sequence of Scan
        One dataset's scans.
    folder : path-like
        The method's prediction folder (searched with ``glob``).
    pattern : str, optional
        A regular expression with ``(?P<subject>...)`` and optionally
        ``(?P<timepoint>...)``, searched in each file's path relative to ``folder``.
    glob : str, default :data:`PREDICTION_GLOB`

    Returns
    -------
    PredictionMatch

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        A bad ``pattern`` or ``glob``; a file that fits two scans equally; two files for one
        scan (the message names the files and the scans).
    """
    folder = Path(folder).expanduser()
    files = prediction_files(folder, glob)
    regex = compile_pattern(pattern)
    counts: dict[str, int] = {}
    for s in scans:
        counts[s.subject] = counts.get(s.subject, 0) + 1
    single = {subject for subject, n in counts.items() if n == 1}
    owner: dict[Scan, Path] = {}
    naming: dict[Path, str] = {}
    extra: list[tuple[Path, str]] = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        how, fits, why = _candidates(rel, scans, single, regex)
        if not fits:
            extra.append((path, why))
            continue
        best = max(score for score, _ in fits)
        top = [s for score, s in fits if score == best]
        if len(top) > 1:
            ids = ", ".join(s.scan_id for s in top)
            raise MatchError(f"{path}: its name fits several scans ({ids}); give a pattern")
        scan = top[0]
        if scan in owner:
            raise MatchError(
                f"{path}: a second prediction for {scan.scan_id} (also {owner[scan]}); "
                "select one with a glob or a pattern"
            )
        owner[scan], naming[path] = path, how
    matched = {s: owner[s] for s in scans if s in owner}
    missing = [s for s in scans if s not in owner]
    return PredictionMatch(folder, matched, missing, extra, naming)


def check_complete(match: PredictionMatch, *, allow_missing: bool = False) -> None:
    """Refuse a match without any pair, or with scans lacking a prediction (unless allowed).

    Raises
    ------
    ValueError
        Naming the folder and the count (the scans are in :meth:`PredictionMatch.report`).
    """
    if not match.matched:
        raise ValueError(f"{match.folder}: no prediction file matches a scan")
    if match.missing and not allow_missing:
        raise ValueError(
            f"{match.folder}: {len(match.missing)} of {len(match.matched) + len(match.missing)} "
            "scans have no prediction (missing: "
            + ", ".join(s.scan_id for s in match.missing[:5])
            + (", ..." if len(match.missing) > 5 else "")
            + "); allow missing ones to score the others only"
        )


def load_prediction(
    path: str | os.PathLike, flair: Volume, *, resample: bool = False, binarize: bool = False
) -> tuple[Volume, bool]:
    """A prediction mask on its scan's grid, in canonical orientation.

    Parameters
    ----------
    path : path-like
        The mask file.
    flair : Volume
        Its scan's FLAIR (:func:`msnb.nifti.load_image`).
    resample : bool, default False
        A mask on another grid (shape or affine) is resampled onto the FLAIR's with
        nearest-neighbour interpolation (nilearn) instead of refused.
    binarize : bool, default False
        Threshold a non-binary mask (:func:`msnb.nifti.load_mask`) instead of refusing it.

    Returns
    -------
    (Volume, bool)
        The mask (bool data) and whether it was resampled.

    Raises
    ------
    NiftiError
        An unreadable file, a mask on another grid without ``resample`` (the message gives
        both grids), a non-binary mask without ``binarize``.
    """
    import nibabel as nib

    path = Path(path)
    try:
        image = nib.load(path)
        shape, affine = tuple(image.shape), image.affine
    except Exception as exc:  # nibabel raises several types for a damaged file
        raise NiftiError(path, f"cannot read the prediction ({exc})") from None
    same_shape = shape[:3] == tuple(flair.original_shape) and all(n == 1 for n in shape[3:])
    same = same_shape and np.allclose(affine, flair.original_affine, atol=AFFINE_ATOL_MM)
    if same or not resample:
        if not same:
            diff = float(np.abs(affine - flair.original_affine).max())
            raise NiftiError(
                path,
                f"prediction grid (shape {shape}, affine max difference {diff:.4g} mm) is not "
                f"that of its scan's FLAIR {flair.path} (shape {tuple(flair.original_shape)}); "
                "resample it (msnb evaluate --resample; a study's external entry: resample: true)",
            )
        return load_mask(path, reference=flair, binarize=binarize, what="prediction"), False
    from nilearn.image import resample_to_img

    target = nib.Nifti1Image(np.zeros(flair.original_shape, np.uint8), flair.original_affine)
    data, _, _ = read_nifti(path)  # checked: readable, 3D
    source = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    resampled = resample_to_img(
        source, target, interpolation="nearest", force_resample=True, copy_header=True
    )
    values = np.asarray(resampled.get_fdata())
    mask = _as_binary(path, values, binarize)
    return canonicalize(mask, flair.original_affine, path=path), True


def _as_binary(path: Path, values: np.ndarray, binarize: bool) -> np.ndarray:
    """A resampled mask's values as bool, as :func:`msnb.nifti.load_mask` reads a mask."""
    if np.isin(np.unique(values), (0, 1)).all():
        return values.astype(bool)
    if not binarize:
        raise NiftiError(path, "prediction is not binary; binarize it (--binarize)")
    return values >= 0.5 if values.min() >= 0 and values.max() <= 1 else values > 0


def evaluate_predictions(
    match: PredictionMatch,
    *,
    method: str,
    train_datasets: Sequence[str] = (),
    test_dataset: str | None = None,
    label: str = "consensus",
    resample: bool = False,
    binarize: bool = False,
    progress: bool = False,
):
    """Score every matched prediction against its scan's truth; one row per scan.

    Parameters
    ----------
    match : PredictionMatch
        From :func:`match_predictions`; its missing scans get no row.
    method : str
        The method's label: the rows' ``model_id``.
    train_datasets : sequence of str, default ()
        The datasets the method was trained on (``train_datasets``, joined by ``+``; empty
        when not known).
    test_dataset : str, optional
        The ``test_dataset`` column (default: each scan's ``dataset``).
    label : str, default "consensus"
        Truth to score against (:func:`msnb.datasets.label_sources`).
    resample, binarize : bool, default False
        See :func:`load_prediction`.
    progress : bool, default False
        A progress bar.

    Returns
    -------
    pandas.DataFrame
        :data:`msnb.metrics.RESULT_COLUMNS` first (``label`` and ``normalization`` empty,
        ``architecture`` :data:`EXTERNAL_ARCHITECTURE`, ``encoder`` the file naming read),
        then ``scan_id``, ``eval_label``, ``status``, lesion and voxel counts, ``prediction``
        (the file), ``resampled`` and ``experiment`` (``external:<method>``, which tells the
        statistics an external method's rows: :func:`msnb.stats.compute_external_table`).

    Raises
    ------
    msnb.nifti.NiftiError
        A prediction on another grid (without ``resample``), not binary (without
        ``binarize``) or unreadable; an unreadable FLAIR or truth.
    """
    from tqdm.auto import tqdm

    rows = []
    for scan, path in tqdm(list(match.matched.items()), desc=method, disable=not progress):
        with warnings.catch_warnings():  # the FLAIR's geometry notes are the dataset's
            warnings.simplefilter("ignore")
            flair = load_image(scan.flair)
        pred, resampled = load_prediction(path, flair, resample=resample, binarize=binarize)
        truth = load_label(scan, label, reference=flair).data
        m = compute_metrics(truth, pred.data, voxel_volume_mm3=flair.voxel_volume_ml * 1000.0)
        ident = {
            "model_id": method,
            "train_datasets": "+".join(train_datasets),
            "label": "",
            "normalization": "",
            "architecture": EXTERNAL_ARCHITECTURE,
            "encoder": match.naming.get(path, ""),
        }
        rows.append(
            result_row(
                ident,
                scan,
                m,
                test_dataset=test_dataset,
                label=label,
                prediction=str(path),
                resampled=resampled,
                experiment=f"external:{method}",
            )
        )
    return results_frame(rows)


def write_demo_predictions(
    scans: Sequence[Scan], folder: str | os.PathLike, *, rater: str = "rater1"
) -> Path:
    """Write each scan's ``rater`` mask into ``folder`` as nnU-Net names its predictions.

    A stand-in for another tool's output (``<dataset>_<subject>_<timepoint>.nii.gz``), for
    the external-evaluation notebook's defaults and the tests. Returns ``folder``.
    """
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for scan in scans:
        if rater not in scan.masks:
            raise ValueError(f"{scan.flair}: no {rater} mask (masks: {', '.join(scan.masks)})")
        case = f"{scan.dataset}_{scan.subject}_{scan.timepoint}"
        with atomic_path(folder / f"{case}.nii.gz") as tmp:
            shutil.copyfile(scan.masks[rater], tmp)
    return folder


# --------------------------------------------------------------------------- CLI


def _resolve(args: argparse.Namespace) -> tuple[str, list[Scan]]:
    """The dataset's name and scans (``--root``: its folder; else the phantom's)."""
    from msnb.sources import load_datasets, resolve_dataset

    if args.root:
        adapter = args.adapter or (
            DATASETS[args.dataset].adapter if args.dataset in DATASETS else None
        )
        if adapter is None:
            raise ValueError(
                f"--dataset {args.dataset!r}: give its --adapter (known: {', '.join(DATASETS)})"
            )
        spec = {"adapter": adapter, "root": args.root}
    else:
        spec = {"phantom": args.phantom}
    resolved = resolve_dataset(args.dataset, spec, progress=True)
    return args.dataset, load_datasets({args.dataset: resolved})


def _cli_evaluate(args: argparse.Namespace) -> int:
    out = Path(args.out or f"{args.method}__{args.dataset}.csv")
    check_output_dir(out.parent if str(out.parent) else Path("."), what="--out folder")
    compile_pattern(args.pattern)
    name, scans = _resolve(args)
    match = match_predictions(scans, args.pred_dir, pattern=args.pattern, glob=args.glob)
    print(match.report())
    check_complete(match, allow_missing=args.allow_missing)
    table = evaluate_predictions(
        match,
        method=args.method,
        train_datasets=args.train,
        test_dataset=name,
        label=args.label,
        resample=args.resample,
        binarize=args.binarize,
        progress=True,
    )
    resampled = int(table["resampled"].sum())
    if resampled:
        print(f"{resampled} predictions resampled onto their scan's grid (nearest neighbour)")
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    print(
        f"{args.method} on {name}: {len(table)} scans, mean Dice {table['dice'].mean():.3f} "
        f"-> {out}"
    )
    return 0


def register_cli(sub) -> None:
    """Add the ``evaluate`` subcommand to ``sub`` (the ``msnb`` subparsers)."""
    p = sub.add_parser(
        "evaluate",
        help="score another tool's lesion masks on a dataset (rows of the results schema)",
        description="Match the mask files of --pred-dir to the scans of --dataset (BIDS "
        "names, nnU-Net case names, or --pattern), check each against its scan's grid, "
        "score it, and write one row per scan with model_id = --method.",
    )
    p.add_argument("--pred-dir", required=True, help="folder of the method's masks")
    p.add_argument("--dataset", required=True, help="dataset name (isbi2015, msseg2016_train ...)")
    p.add_argument("--root", help="the dataset's folder (default: the phantom's)")
    p.add_argument("--adapter", help="its layout, for a name msnb does not know")
    p.add_argument("--phantom", default="tiny", help="phantom preset without --root")
    p.add_argument("--method", required=True, help="the method's label: model_id of the rows")
    p.add_argument("--out", help="results CSV (default: <method>__<dataset>.csv)")
    p.add_argument("--train", nargs="*", default=[], help="datasets the method was trained on")
    p.add_argument("--label", default="consensus", help="truth: consensus, rater1, union ...")
    p.add_argument(
        "--pattern",
        help="regex with (?P<subject>...) [and (?P<timepoint>...)] searched in each file's "
        "path relative to --pred-dir (default: BIDS or nnU-Net names)",
    )
    p.add_argument("--glob", default=PREDICTION_GLOB, help="files to consider under --pred-dir")
    p.add_argument(
        "--resample",
        action="store_true",
        help="resample masks on another grid onto their scan's (nearest neighbour)",
    )
    p.add_argument("--binarize", action="store_true", help="threshold non-binary masks")
    p.add_argument("--allow-missing", action="store_true", help="score the matched scans only")
    p.set_defaults(func=_cli_evaluate)
