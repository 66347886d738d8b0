"""``msnb segment``: lesion masks for FLAIR files, as plain files or as BIDS derivatives.

Each input gets its own outputs, planned before any work (:func:`plan_outputs`):

- plain layout, ``<out>/<name>_lesions.nii.gz`` (uint8, the input's grid), ``_lesions.csv``
  (one row per lesion) and, with ``probabilities``, ``_probability.nii.gz``. ``<name>`` is
  the file name without its extension; inputs with the same file name (every MSSEG FLAIR
  is ``FLAIR_preprocessed.nii.gz``) are told apart by the folders that differ between them
  (``Center_01_Patient_01_FLAIR_preprocessed``);
- BIDS layout, for inputs named and placed as BIDS raw files
  (``sub-01/ses-02/anat/sub-01_ses-02_FLAIR.nii.gz``), a derivatives dataset:
  ``<out>/dataset_description.json`` and, in ``<out>/sub-01/ses-02/anat/``,
  ``sub-01_ses-02_space-orig_desc-lesion_mask.nii.gz``,
  ``..._space-orig_label-lesion_probseg.nii.gz``, ``..._space-orig_desc-lesion_lesions.tsv``,
  each with a JSON sidecar (sources, threshold, msnb version, the bundle and its digest).

An input's outputs are written all or none (:func:`msnb.files.atomic_path`), so a folder
can be resumed: with ``skip_existing`` an input whose outputs all exist is not segmented
again. An input that cannot be read is reported and the others are segmented.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from msnb import __version__
from msnb.bids import BidsName, derivative_path, find_bids_root, find_flairs, is_bids_root
from msnb.bids import parse_name as parse_bids_name
from msnb.docs import fill_doc
from msnb.files import atomic_path, write_json, write_text
from msnb.nifti import NiftiError, OutputError, check_output_dir

__all__ = [
    "SUMMARY_COLUMNS",
    "Target",
    "expand_inputs",
    "plan_outputs",
    "segment_file",
    "segment_files",
]

#: Columns of the summary table of :func:`segment_files`.
SUMMARY_COLUMNS = ["input", "subject", "session", "status", "lesions", "volume_ml", "seconds"]

#: The columns of a lesion table, as its BIDS sidecar describes them.
_TABLE_COLUMNS = {
    "id": "Lesion number, 1 for the largest (6-connected components of the mask)",
    "voxels": "Voxels of the lesion",
    "ml": {"Description": "Volume of the lesion", "Units": "mL"},
    "x_mm": {"Description": "Centroid, x world coordinate of the input's affine", "Units": "mm"},
    "y_mm": {"Description": "Centroid, y world coordinate of the input's affine", "Units": "mm"},
    "z_mm": {"Description": "Centroid, z world coordinate of the input's affine", "Units": "mm"},
}


@dataclass(frozen=True)
class Target:
    """One input and where its outputs go.

    Attributes
    ----------
    input : Path
    name : str
        Its name in messages and the summary (the plain outputs' prefix).
    paths : dict of str to Path
        Output files by role: ``mask``, ``table``, ``probability`` (when written) and, in
        the BIDS layout, their sidecars ``mask_json``, ``table_json``, ``probability_json``.
    out : Path
        The output folder.
    bids : BidsName or None
        The input's BIDS name, in the BIDS layout.
    bids_root : Path or None
        The input's BIDS dataset, in the BIDS layout.
    """

    input: Path
    name: str
    paths: dict
    out: Path
    bids: BidsName | None = None
    bids_root: Path | None = None


def _output_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _plain_names(inputs: Sequence[Path]) -> list[str]:
    """Output names: the file names without extension, inputs sharing one told apart by
    the folders of their paths that the others of that name do not share."""
    stems = [_output_stem(p) for p in inputs]
    names = list(stems)
    for stem in set(stems):
        group = [i for i, s in enumerate(stems) if s == stem]
        if len(group) < 2:
            continue
        parents = {i: inputs[i].absolute().parent.parts for i in group}
        common = set.intersection(*(set(parts) for parts in parents.values()))
        for i, parts in parents.items():
            names[i] = "_".join([*(p for p in parts if p not in common), stem])
    return names


def _plain_paths(out: Path, name: str, probabilities: bool) -> dict[str, Path]:
    paths = {"mask": out / f"{name}_lesions.nii.gz"}
    if probabilities:
        paths["probability"] = out / f"{name}_probability.nii.gz"
    paths["table"] = out / f"{name}_lesions.csv"
    return paths


def _bids_paths(out: Path, name: BidsName) -> dict[str, Path]:
    def path(entities, suffix, ext):
        return derivative_path(out, name, entities=entities, suffix=suffix, extension=ext)

    lesion, label = {"space": "orig", "desc": "lesion"}, {"space": "orig", "label": "lesion"}
    return {
        "mask": path(lesion, "mask", ".nii.gz"),
        "mask_json": path(lesion, "mask", ".json"),
        "probability": path(label, "probseg", ".nii.gz"),
        "probability_json": path(label, "probseg", ".json"),
        "table": path(lesion, "lesions", ".tsv"),
        "table_json": path(lesion, "lesions", ".json"),
    }


def plan_outputs(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    bids: bool | None = None,
    probabilities: bool = False,
) -> list[Target]:
    """Where each input's outputs go; no two inputs share one.

    Parameters
    ----------
    inputs : sequence of path-like
        FLAIR files.
    out : path-like
        The output folder (the derivatives dataset's folder in the BIDS layout).
    bids : bool or None, default None
        The BIDS layout; None: when every input is a BIDS raw FLAIR
        (:func:`msnb.bids.find_bids_root`), all of one BIDS dataset.
    probabilities : bool, default False
        Also a probability map in the plain layout (the BIDS layout always has one).

    Raises
    ------
    ValueError
        A file given twice; two inputs whose outputs would still coincide; with ``bids``,
        an input that is not a BIDS raw file, or inputs of several BIDS datasets.
    """
    inputs, out = [Path(p) for p in inputs], Path(out)
    seen: dict[Path, Path] = {}
    for p in inputs:
        if p.absolute() in seen:
            raise ValueError(f"{p}: given twice (also as {seen[p.absolute()]})")
        seen[p.absolute()] = p
    roots = [find_bids_root(p) for p in inputs]
    if bids is None:
        bids = bool(inputs) and None not in roots and len(set(roots)) == 1
    if bids:
        for p, root in zip(inputs, roots, strict=True):
            if root is None:
                raise ValueError(
                    f"{p}: not a BIDS raw file (sub-<label>/[ses-<label>/]anat/"
                    "sub-<label>[_ses-<label>]..._<suffix>.nii[.gz]); --bids needs one"
                )
        if len(set(roots)) > 1:
            raise ValueError(f"inputs of several BIDS datasets: {', '.join(map(str, set(roots)))}")
        names = [parse_bids_name(p) for p in inputs]
        targets = [
            Target(p, n.stem(dict(n.source)), _bids_paths(out, n), out, n, r)
            for p, n, r in zip(inputs, names, roots, strict=True)
        ]
    else:
        targets = [
            Target(p, name, _plain_paths(out, name, probabilities), out)
            for p, name in zip(inputs, _plain_names(inputs), strict=True)
        ]
    masks = [t.paths["mask"] for t in targets]
    twice = sorted({t.name for t in targets if masks.count(t.paths["mask"]) > 1})
    if twice:
        raise ValueError(f"several inputs would write the same outputs: {', '.join(twice)}")
    return targets


def expand_inputs(items: Sequence[str | os.PathLike]) -> list[Path]:
    """The FLAIR files of command-line arguments: a file is itself; a BIDS dataset folder
    its raw FLAIRs (:func:`msnb.bids.find_flairs`); another folder its ``.nii[.gz]`` files
    (not its subfolders').

    Raises
    ------
    ValueError
        A folder without any such file.
    """
    files = []
    for item in items:
        path = Path(item)
        if not path.is_dir():
            files.append(path)
            continue
        if is_bids_root(path):
            found = find_flairs(path)
        else:
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz"))
            )
        if not found:
            kind = "sub-*/[ses-*/]anat/*_FLAIR.nii[.gz]" if is_bids_root(path) else ".nii[.gz]"
            raise ValueError(f"{path}: a folder without any {kind} file")
        files += found
    return files


def _provenance(bundle, threshold: float, backend) -> dict:
    """What made the outputs: msnb's version, the bundle (folder, model id, the SHA-256 of
    its ``bundle.json``), the threshold and the backend (:meth:`msnb.onnxrt.Backend.describe`)."""
    meta_file = None if bundle.path is None else Path(bundle.path) / "bundle.json"
    digest = None
    if meta_file is not None and meta_file.is_file():
        digest = hashlib.sha256(meta_file.read_bytes()).hexdigest()
    return {
        "msnb_version": __version__,
        "model_id": bundle.model_id,
        "train_datasets": list(bundle.meta.get("train_datasets", [])),
        "bundle": None if bundle.path is None else str(Path(bundle.path).absolute()),
        "bundle_json_sha256": digest,
        "threshold": threshold,
        **backend.describe(),
    }


def _sidecars(target: Target, provenance: dict) -> dict[str, dict]:
    """The JSON sidecars of a BIDS target's outputs, by role."""
    source = target.input.absolute().relative_to(target.bids_root.absolute()).as_posix()
    common = {"Sources": [f"bids:raw:{source}"], "SpatialReference": "orig", "msnb": provenance}
    threshold = provenance["threshold"]
    return {
        "mask_json": {
            "Type": "Lesion",
            "Description": f"MS lesions: voxels whose lesion probability is >= {threshold}",
            **common,
        },
        "probability_json": {
            "Description": "Lesion probability of each voxel (0 outside the brain mask)",
            **common,
        },
        "table_json": {**_TABLE_COLUMNS, "Sources": common["Sources"], "msnb": provenance},
    }


def _write_target(target: Target, flair, pred, table, provenance: dict) -> None:
    """Write a target's outputs: temporaries renamed only when all are written.

    Raises
    ------
    OutputError
        A write failed (disk full, read-only...): no output of this target is left, and the
        message names the file.
    """
    from msnb.nifti import save_image, save_mask

    sep = "\t" if target.bids is not None else ","
    writers = {
        "mask": lambda tmp: save_mask(pred.mask_canonical, flair, tmp),
        "probability": lambda tmp: save_image(pred.probability_canonical, flair, tmp),
        "table": lambda tmp: table.to_csv(tmp, sep=sep, index=False, float_format="%.3f"),
    }
    if target.bids is not None:
        for role, content in _sidecars(target, provenance).items():
            text = json.dumps(content, indent=1) + "\n"
            writers[role] = lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")
    current = None
    try:
        with contextlib.ExitStack() as stack:
            for role, path in target.paths.items():
                current = path
                writers[role](stack.enter_context(atomic_path(path)))
            current = None  # the renames, when the block ends
    except OSError as exc:
        problem = exc.strerror or str(exc) or type(exc).__name__
        where = current if current is not None else Path(exc.filename or target.paths["mask"])
        raise OutputError(where, f"cannot write: {problem}") from exc


def _write_description(out: Path, bids_root: Path) -> None:
    """``dataset_description.json`` of msnb's derivatives in ``out``, unless there already.

    Raises
    ------
    OutputError
        ``out`` holds another pipeline's dataset, or msnb's outputs of another raw dataset.
    """
    path, raw = out / "dataset_description.json", bids_root.absolute().as_uri()
    if path.is_file():
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
            tool = known["GeneratedBy"][0]["Name"]
            link = known.get("DatasetLinks", {}).get("raw")
        except (ValueError, KeyError, IndexError, TypeError):
            tool, link = None, None
        if tool != "msnb":
            raise OutputError(path, "not msnb's derivatives: give --out a folder of its own")
        if link != raw:
            raise OutputError(path, f"msnb's outputs of another dataset ({link}), not {raw}")
        return
    write_json(
        path,
        {
            "Name": "msnb lesion segmentation",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "msnb", "Version": __version__}],
            "SourceDatasets": [{"URL": raw}],
            "DatasetLinks": {"raw": raw},
        },
    )


def _open(bundle, threshold: float | None, backend, device: str):
    """The bundle (loaded without its torch weights when given as a path), the backend that
    runs it (opened from its name), and the outputs' provenance at ``threshold`` (None: the
    bundle's)."""
    from msnb.bundle import load_bundle
    from msnb.onnxrt import open_backend

    bundle = bundle if hasattr(bundle, "model") else load_bundle(bundle, weights=False)
    if isinstance(backend, str):
        backend = open_backend(bundle, backend=backend, device=device)
    threshold = bundle.threshold if threshold is None else threshold
    return bundle, backend, _provenance(bundle, threshold, backend)


def _segment_target(
    target: Target, bundle, *, brain_mask, provenance: dict, backend, batch_size: int
) -> dict:
    """Segment one target and write its outputs; its summary row."""
    from msnb.metrics import lesion_table
    from msnb.nifti import load_image, load_mask
    from msnb.predict import predict_volume

    t0 = time.perf_counter()
    flair = load_image(target.input)
    brain = None
    if brain_mask is not None:
        brain = load_mask(
            brain_mask, reference=flair, binarize=True, allow_empty=False, what="brain mask"
        ).data
    pred = predict_volume(
        flair,
        bundle,
        brain=brain,
        threshold=provenance["threshold"],
        batch_size=batch_size,
        device=backend.device,
        network=backend.network,
    )
    table = lesion_table(pred.mask, pred.affine)
    _write_target(target, flair, pred, table, provenance)
    row = _row(target, "ok", len(table), float(table.ml.sum()) if len(table) else 0.0)
    seconds = time.perf_counter() - t0
    return {**row, "seconds": seconds, "backend": backend.name, "steps": pred.seconds}


def _row(target: Target, status: str, lesions=None, volume_ml=None) -> dict:
    ents = {} if target.bids is None else target.bids.entities
    return {
        "input": str(target.input),
        "subject": ents.get("sub", target.name),
        "session": ents.get("ses", ""),
        "status": status,
        "lesions": lesions,
        "volume_ml": volume_ml,
        "seconds": 0.0,
        **{role: str(path) for role, path in target.paths.items() if not role.endswith("_json")},
    }


def _existing_row(target: Target) -> dict | None:
    """The summary row of a target whose outputs all exist (from its lesion table), or
    None when one is missing or the table cannot be read."""
    import pandas as pd

    if not all(p.is_file() for p in target.paths.values()):
        return None
    sep = "\t" if target.bids is not None else ","
    try:
        table = pd.read_csv(target.paths["table"], sep=sep)
        volume = float(table["ml"].sum())
    except (ValueError, KeyError, OSError):
        return None
    return _row(target, "skipped", len(table), volume)


@fill_doc
def segment_files(
    targets: Sequence[Target],
    bundle,
    *,
    brain_mask: str | os.PathLike | None = None,
    threshold: float | None = None,
    skip_existing: bool = False,
    report: Callable[[dict], None] | None = None,
    batch_size: int = 16,
    device: str = "auto",
    backend="auto",
):
    """Segment every target (:func:`plan_outputs`); one input that fails does not stop the
    others.

    Parameters
    ----------
    targets : sequence of Target
    %(bundle)s
    brain_mask : path-like, optional
        A brain mask on the grid of the (single) input; computed when missing.
    threshold : float in (0, 1], optional
        The mask is ``probability >= threshold``; default: the bundle's.
    skip_existing : bool, default False
        Leave an input whose outputs all exist as it is (status ``skipped``, its counts read
        from its lesion table): a stopped run resumes where it was.
    report : callable, optional
        Called with each row as soon as its input is done.
    %(batch_size)s
    %(device)s
    %(backend)s

    Returns
    -------
    pandas.DataFrame
        One row per target: :data:`SUMMARY_COLUMNS` (``status`` is ``ok``, ``skipped`` or
        ``error``), the output paths by role, ``backend`` (of the inputs segmented now),
        ``error`` (the message of a failed input).

    Raises
    ------
    msnb.nifti.OutputError
        An output cannot be written (the run stops: the next ones would fail alike).
    """
    import pandas as pd

    from msnb.predict import check_threshold

    threshold = None if threshold is None else check_threshold(threshold)
    bundle, backend, provenance = _open(bundle, threshold, backend, device)
    options = {"batch_size": batch_size, "backend": backend, "brain_mask": brain_mask}
    for out, root in {(t.out, t.bids_root) for t in targets if t.bids is not None}:
        _write_description(out, root)
    rows = []
    for target in targets:
        row = _existing_row(target) if skip_existing else None
        if row is None:
            try:
                row = _segment_target(target, bundle, provenance=provenance, **options)
            except (NiftiError, ValueError, FileNotFoundError) as exc:
                row = {**_row(target, "error"), "error": " ".join(str(exc).split())}
        rows.append(row)
        if report is not None:
            report(row)
    table = pd.DataFrame(rows)
    return table[SUMMARY_COLUMNS + [c for c in table.columns if c not in SUMMARY_COLUMNS]]


@fill_doc
def segment_file(
    flair_path: str | os.PathLike,
    bundle,
    out_dir: str | os.PathLike,
    *,
    brain_mask: str | os.PathLike | None = None,
    probabilities: bool = False,
    threshold: float | None = None,
    bids: bool | None = False,
    batch_size: int = 16,
    device: str = "auto",
    backend: str = "auto",
) -> dict:
    """Segment one FLAIR file and write its outputs into ``out_dir`` (see the module).

    The batch size, threshold, device and output folder are checked before any work; the
    outputs are written to temporaries and renamed only when all of them are written, so a
    failure (a full disk) leaves none.

    Parameters
    ----------
    flair_path : path-like
        The FLAIR NIfTI file.
    %(bundle)s
    out_dir : path-like
        Created if missing.
    brain_mask : path-like, optional
        A brain mask on the FLAIR's grid; computed when missing.
    probabilities : bool, default False
        Also write the probability map (always written in the BIDS layout).
    threshold : float in (0, 1], optional
        The mask is ``probability >= threshold``; default: the bundle's.
    bids : bool or None, default False
        Write BIDS derivatives (None: when the input is a BIDS raw FLAIR).
    %(batch_size)s
    %(device)s
    %(backend)s

    Returns
    -------
    dict
        ``input``, ``mask``, ``table``, ``probability`` (or None), ``lesions``,
        ``volume_ml``, ``seconds``, ``steps`` (:attr:`msnb.predict.Prediction.seconds`),
        ``backend`` (``"torch"`` or ``"onnx"``).

    Raises
    ------
    ValueError
        ``batch_size`` or ``threshold`` is not valid; ``bids`` for a non-BIDS input.
    msnb.device.DeviceError
        ``device`` is unknown or not available here.
    msnb.onnxrt.BackendError
        ``backend`` is unknown or cannot be used here.
    msnb.nifti.OutputError
        ``out_dir`` is (under) a file or not writable, or an output could not be written.
    msnb.bundle.BundleError, msnb.nifti.NiftiError
        A damaged bundle; an unreadable or unusable input.
    """
    from msnb.predict import check_batch_size, check_threshold

    check_batch_size(batch_size)
    if threshold is not None:
        check_threshold(threshold)
    out = check_output_dir(out_dir, what="--out folder")
    bundle, engine, provenance = _open(bundle, threshold, backend, device)
    (target,) = plan_outputs([flair_path], out, bids=bids, probabilities=probabilities)
    for out, root in [(target.out, target.bids_root)] if target.bids is not None else []:
        _write_description(out, root)
    options = {"batch_size": batch_size, "backend": engine, "brain_mask": brain_mask}
    row = _segment_target(target, bundle, provenance=provenance, **options)
    keys = ("mask", "table", "lesions", "volume_ml", "seconds", "steps", "backend")
    return {
        "input": str(target.input),
        **{k: row[k] for k in keys},
        "probability": row.get("probability"),
    }


# --------------------------------------------------------------------------- CLI


def _print_row(row: dict) -> None:
    if row["status"] == "error":
        print(f"msnb segment: error: {row['error']}", file=sys.stderr)
    elif row["status"] == "skipped":
        print(f"{row['input']}: outputs exist, skipped ({row['mask']})")
    else:
        print(
            f"{row['input']}: {row['lesions']} lesions, {row['volume_ml']:.2f} mL "
            f"-> {row['mask']} ({row['seconds']:.1f} s)"
        )


def _cli_segment(args: argparse.Namespace) -> int:
    from msnb.bundle import load_bundle
    from msnb.onnxrt import open_backend
    from msnb.predict import check_batch_size, check_threshold

    # everything that can be checked is checked before the first scan is predicted
    check_batch_size(args.batch_size)
    if args.threshold is not None:
        check_threshold(args.threshold)
    check_output_dir(args.out, what="--out folder")
    inputs = expand_inputs(args.flair)
    if args.brain_mask and len(inputs) > 1:
        raise ValueError("--brain-mask applies to a single input; give one FLAIR file")
    targets = plan_outputs(inputs, args.out, bids=args.bids, probabilities=args.probabilities)
    bundle = load_bundle(args.model, weights=False)
    backend = open_backend(bundle, backend=args.backend, device=args.device)
    summary = segment_files(
        targets,
        bundle,
        brain_mask=args.brain_mask,
        threshold=args.threshold,
        skip_existing=args.skip_existing,
        report=_print_row,
        batch_size=args.batch_size,
        backend=backend,
    )
    if len(summary) > 1:
        columns = [c for c in SUMMARY_COLUMNS if c != "session" or summary.session.any()]
        shown = summary[columns].fillna("-")
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.summary:
        write_text(args.summary, summary.to_csv(sep="\t", index=False, na_rep="n/a"))
    failed = summary[summary.status == "error"]
    if len(failed) and len(summary) > 1:  # one input: its error line says it all
        print(
            f"msnb segment: {len(failed)} of {len(summary)} inputs failed: "
            + ", ".join(failed.input),
            file=sys.stderr,
        )
    return 1 if len(failed) else 0


def register_cli(sub) -> None:
    from msnb.onnxrt import BACKENDS

    p = sub.add_parser(
        "segment",
        help="segment MS lesions in FLAIR NIfTI files with a model bundle",
        description="Write per input a uint8 lesion mask (the input's grid), a lesion table "
        "and optionally the probability map; BIDS raw FLAIRs get BIDS derivatives. A folder "
        "stands for its .nii[.gz] files (a BIDS dataset: its FLAIRs). An input that fails "
        "is reported and the others are segmented; the exit status is then 1.",
    )
    p.add_argument("flair", nargs="+", help="FLAIR NIfTI file(s) or folder(s)")
    p.add_argument("--model", required=True, help="model bundle directory")
    p.add_argument("--out", required=True, help="output folder (BIDS: the derivatives folder)")
    p.add_argument("--brain-mask", help="brain mask NIfTI (default: computed)")
    p.add_argument("--probabilities", action="store_true", help="also write the probability map")
    p.add_argument(
        "--threshold", type=float, help="mask = probability >= THRESHOLD (default: the model's)"
    )
    p.add_argument(
        "--bids",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write BIDS derivatives (default: when every input is a BIDS raw FLAIR)",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave inputs whose outputs all exist (resume a stopped run)",
    )
    p.add_argument("--summary", metavar="TSV", help="also write the summary table there")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="onnx: ONNX Runtime on the CPU (the network exported once, beside the bundle or "
        "in the cache); auto (default): onnx when onnxruntime is installed, the device is "
        "the CPU and the model float32, torch otherwise; onnx-int8: the export quantized to "
        "int8 with the bundle's calibration planes (1.1-1.2x faster end to end on a 2-core "
        "CPU without AVX-512; the masks change slightly)",
    )
    p.set_defaults(func=_cli_segment)
