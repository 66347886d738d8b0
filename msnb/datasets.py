"""Dataset adapters: turn a folder in a dataset's distributed layout into :class:`Scan` records.

Adapters are written against the layouts the datasets' owners distribute. File names are
matched case-insensitively, with ``.nii`` or ``.nii.gz``.

============== ===================================================================
adapter        layout under ``root``
============== ===================================================================
isbi2015       ``training/trainingNN/preprocessed/trainingNN_TT_flair_pp.nii`` and
               ``training/trainingNN/masks/trainingNN_TT_mask1.nii`` / ``_mask2.nii``
msseg2016_*    ``Training/`` (``msseg2016_train``) or ``Testing/`` (``msseg2016_test``) with
               ``Center_CC/Patient_PP/Preprocessed_Data/FLAIR_preprocessed.nii.gz`` and
               ``Masks/Consensus.nii.gz``, ``Masks/ManualSegmentation_1..7.nii.gz``,
               ``Masks/Brain_Mask.nii.gz``
3dmrms         ``patientXX/patientXX_FLAIR.nii.gz``, ``patientXX_consensus_gt.nii.gz``,
               ``patientXX_brainmask.nii.gz``
bids           ``sub-*/[ses-*/]anat/*_FLAIR.nii[.gz]`` with masks in
               ``derivatives/<pipeline>/sub-*/[ses-*/]anat/*_desc-<label>_mask.nii.gz``
               (``desc-consensus``, ``desc-rater<K>``, ``desc-brain``) and the center
               from ``participants.tsv`` (column ``center`` or ``site``)
folder         any tree, from glob patterns and a regular expression
============== ===================================================================

Mask names in records are uniform across datasets: ``consensus`` and ``rater1`` ...
``raterK`` (ISBI's ``mask1``/``mask2`` are ``rater1``/``rater2``).
"""

from __future__ import annotations

import argparse
import logging
import re
import string
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msnb.bids import find_flairs, parse_name, read_participants
from msnb.masks import combine_masks
from msnb.nifti import NiftiError, Volume, load_image, load_mask, read_nifti

__all__ = [
    "ADAPTERS",
    "CONSENSUS_FALLBACK",
    "DATASETS",
    "LABELS",
    "DatasetError",
    "DatasetInfo",
    "Scan",
    "check_scans",
    "effective_label",
    "label_sources",
    "load_3dmrms",
    "load_bids",
    "load_folder",
    "load_isbi2015",
    "load_label",
    "load_msseg2016_test",
    "load_msseg2016_train",
    "load_scans",
    "scans_table",
]

log = logging.getLogger(__name__)

NIFTI_RE = r"\.nii(?:\.gz)?"


class DatasetError(ValueError):
    """A dataset folder that does not have the expected layout; names the path."""


@dataclass(frozen=True, eq=True)
class Scan:
    """One FLAIR scan with its annotations.

    Attributes
    ----------
    dataset : str
        Adapter-level dataset name, e.g. ``"msseg2016_train"``.
    subject : str
        Patient identifier, unique within the dataset.
    timepoint : str
        Time point (``"01"`` ...); ``"01"`` for cross-sectional datasets.
    center : str
        Acquisition center / scanner label.
    flair : Path
        The FLAIR image.
    masks : dict of str to Path
        Lesion masks by name: ``consensus``, ``rater1`` ... ``raterK``.
    brain_mask : Path or None
        Brain mask, when the dataset ships one.
    n4 : bool, default False
        Apply N4 bias-field correction to the FLAIR when it is loaded
        (:func:`msnb.preprocess.load_flair`); a per-dataset setting of a study.
    """

    dataset: str
    subject: str
    timepoint: str
    center: str
    flair: Path
    masks: dict[str, Path] = field(default_factory=dict, hash=False)
    brain_mask: Path | None = None
    n4: bool = False

    @property
    def scan_id(self) -> str:
        """``dataset/subject/timepoint``, unique across datasets."""
        return f"{self.dataset}/{self.subject}/{self.timepoint}"

    @property
    def patient_key(self) -> str:
        """``dataset/subject``: the unit of train/validation splits."""
        return f"{self.dataset}/{self.subject}"

    @property
    def raters(self) -> list[str]:
        """Names of the individual raters' masks, in order."""
        names = [m for m in self.masks if re.fullmatch(r"rater\d+", m)]
        return sorted(names, key=lambda m: int(m[5:]))

    def as_row(self) -> dict:
        """A flat dict for tables (paths as strings, masks joined by ``;``)."""
        return {
            "dataset": self.dataset,
            "subject": self.subject,
            "timepoint": self.timepoint,
            "center": self.center,
            "flair": str(self.flair),
            "masks": ";".join(self.masks),
            "brain_mask": "" if self.brain_mask is None else str(self.brain_mask),
        }


LABELS = ("consensus", "union", "majority")  # plus any "raterK"


def effective_label(scan: Scan, label: str) -> str:
    """The label ``label`` stands for on ``scan``.

    ``consensus`` is the consensus mask when the scan has one. A dataset without one uses
    its :attr:`DatasetInfo.consensus_fallback`: for ISBI 2015, which ships two raters, the
    union of both, as the paper's authors build it (``clip(mask1 + mask2, 0, 1)``) for
    training and as the test truth (the paper's Table 2 ISBI row equals Table 5's union
    row). Any other dataset without a consensus also uses the union of its raters.
    """
    if label != "consensus" or "consensus" in scan.masks:
        return label
    info = DATASETS.get(scan.dataset)
    return info.consensus_fallback if info and info.consensus_fallback else "union"


def label_sources(scan: Scan, label: str) -> list[str]:
    """Which of ``scan``'s masks make up the training/evaluation label ``label``.

    ``consensus`` uses the consensus mask, or the dataset's fallback without one (see
    :func:`effective_label`: the union of ISBI 2015's two raters). ``union`` is the union
    of all raters, ``majority`` the voxels marked by more than half of the raters;
    ``raterK`` is that rater alone.
    """
    asked, label = label, effective_label(scan, label)
    if label == "consensus":
        if "consensus" in scan.masks:
            return ["consensus"]
    elif label in ("union", "majority"):
        if scan.raters:
            return scan.raters
    elif label in scan.masks:
        return [label]
    raise DatasetError(
        f"{scan.flair}: label {asked!r} is not available (masks: {', '.join(scan.masks) or 'none'})"
    )


def load_label(scan: Scan, label: str, *, reference=None, binarize: bool = False):
    """Load the label ``label`` of ``scan`` as a canonical bool :class:`msnb.nifti.Volume`.

    Several raters are combined with :func:`msnb.masks.combine_masks` (``union`` or
    ``majority``).
    """
    names = label_sources(scan, label)
    vols = [
        load_mask(scan.masks[n], reference=reference, binarize=binarize, what=f"{n} mask")
        for n in names
    ]
    if len(vols) == 1:
        return vols[0]
    method = "union" if effective_label(scan, label) == "union" else "majority"
    data = combine_masks([v.data for v in vols], method=method)
    first = vols[0]
    return Volume(
        data=data,
        affine=first.affine,
        path=first.path,
        original_affine=first.original_affine,
        original_shape=first.original_shape,
        header=first.header,
    )


# --------------------------------------------------------------------------- helpers


def _ci(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


def _children(
    path: Path, pattern: re.Pattern, *, dirs: bool | None = None
) -> list[tuple[Path, re.Match]]:
    if not path.is_dir():
        return []
    out = []
    for child in sorted(path.iterdir()):
        if dirs is True and not child.is_dir():
            continue
        if dirs is False and not child.is_file():
            continue
        m = pattern.fullmatch(child.name)
        if m:
            out.append((child, m))
    return out


def _find_one(folder: Path, pattern: str, *, what: str, required: bool = True) -> Path | None:
    hits = [p for p, _ in _children(folder, _ci(pattern + NIFTI_RE), dirs=False)]
    if len(hits) > 1:
        raise DatasetError(f"{folder}: several files for {what}: {', '.join(h.name for h in hits)}")
    if not hits:
        if required:
            raise DatasetError(
                f"{folder}: missing {what} (expected a file matching {pattern}.nii[.gz])"
            )
        return None
    return hits[0]


def _require_dir(root: Path, adapter: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset root for {adapter!r} does not exist or is not a folder"
        )
    return root


def _check_unique(scans: list[Scan], root: Path) -> list[Scan]:
    seen: dict[str, Path] = {}
    for s in scans:
        if s.scan_id in seen:
            raise DatasetError(
                f"{root}: duplicate scan {s.scan_id}: {seen[s.scan_id]} and {s.flair}"
            )
        seen[s.scan_id] = s.flair
    if not scans:
        raise DatasetError(f"{root}: no scans found")
    return scans


def _mask_is_empty(path: Path) -> bool:
    """Whether a mask file has no foreground voxel (NiftiError when it cannot be read)."""
    data, _, _ = read_nifti(path)
    return not np.asarray(data).any()


# --------------------------------------------------------------------------- adapters


def load_isbi2015(root: str | Path) -> list[Scan]:
    """ISBI 2015 longitudinal challenge, training part (one center, two raters).

    ``root`` is the folder that holds ``training/`` (the root itself is accepted when it is
    the ``training`` folder).
    """
    root = _require_dir(root, "isbi2015")
    base = root / "training" if (root / "training").is_dir() else root
    if not base.name.lower() == "training" and base == root:
        matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == "training"]
        base = matches[0] if matches else root
    scans = []
    subjects = _children(base, _ci(r"training(\d+)"), dirs=True)
    if not subjects:
        raise DatasetError(
            f"{base}: no trainingNN folders (ISBI 2015 layout: training/trainingNN/...)"
        )
    for sdir, m in subjects:
        nn = m.group(1)
        pre = next(
            (p for p in sdir.iterdir() if p.is_dir() and p.name.lower() == "preprocessed"), None
        )
        masks_dir = next(
            (p for p in sdir.iterdir() if p.is_dir() and p.name.lower() == "masks"), None
        )
        if pre is None:
            raise DatasetError(f"{sdir}: missing preprocessed/ folder")
        flairs = _children(pre, _ci(rf"training{nn}_(\d+)_flair_pp{NIFTI_RE}"), dirs=False)
        if not flairs:
            raise DatasetError(f"{pre}: no training{nn}_TT_flair_pp.nii files")
        for fpath, fm in flairs:
            tt = fm.group(1)
            masks = {}
            for k in (1, 2):
                mpath = (
                    None
                    if masks_dir is None
                    else _find_one(
                        masks_dir,
                        rf"training{nn}_{tt}_mask{k}",
                        what=f"rater {k} mask",
                        required=False,
                    )
                )
                if mpath is None:
                    raise DatasetError(
                        f"{fpath}: FLAIR without its rater {k} mask "
                        f"(expected {sdir.name}/masks/training{nn}_{tt}_mask{k}.nii)"
                    )
                masks[f"rater{k}"] = mpath
            scans.append(Scan("isbi2015", nn, tt, "isbi", fpath, masks, None))
    return _check_unique(scans, root)


def _load_msseg(root: Path, split: str, dataset: str, *, exclude_empty: bool = True) -> list[Scan]:
    root = _require_dir(root, dataset)
    base = next(
        (p for p in [root, *root.iterdir()] if p.is_dir() and p.name.lower() == split.lower()), None
    )
    if base is None:
        raise DatasetError(f"{root}: missing {split}/ folder (MSSEG 2016 layout)")
    centers = _children(base, _ci(r"center_(\w+)"), dirs=True)
    if not centers:
        raise DatasetError(f"{base}: no Center_CC folders (MSSEG 2016 layout)")
    scans = []
    for cdir, cm in centers:
        cc = cm.group(1)
        for pdir, pm in _children(cdir, _ci(r"patient_(\w+)"), dirs=True):
            pp = pm.group(1)
            sub = {p.name.lower(): p for p in pdir.iterdir() if p.is_dir()}
            if "preprocessed_data" not in sub:
                raise DatasetError(f"{pdir}: missing Preprocessed_Data/ folder")
            if "masks" not in sub:
                raise DatasetError(f"{pdir}: FLAIR without masks (missing Masks/ folder)")
            flair = _find_one(sub["preprocessed_data"], "FLAIR_preprocessed", what="FLAIR")
            mdir = sub["masks"]
            consensus = _find_one(mdir, "Consensus", what="consensus mask")
            masks = {"consensus": consensus}
            for k in range(1, 8):
                mp = _find_one(mdir, f"ManualSegmentation_{k}", what=f"rater {k}", required=False)
                if mp is not None:
                    masks[f"rater{k}"] = mp
            brain = _find_one(mdir, "Brain_Mask", what="brain mask", required=False)
            if brain is None:
                warnings.warn(
                    f"{mdir}: no Brain_Mask file; a brain mask will be computed", stacklevel=2
                )
            scan = Scan(dataset, f"{cc}_{pp}", "01", cc, flair, masks, brain)
            if exclude_empty and _mask_is_empty(consensus):
                msg = f"{consensus}: consensus is empty; scan {scan.scan_id} left out (as in the paper)"
                log.warning(msg)
                warnings.warn(msg, stacklevel=2)
                continue
            scans.append(scan)
    return _check_unique(scans, root)


def load_msseg2016_train(root: str | Path, *, exclude_empty: bool = True) -> list[Scan]:
    """MSSEG 2016 training set (``root/Training``; centers 01, 07, 08; 7 raters + consensus)."""
    return _load_msseg(Path(root), "Training", "msseg2016_train", exclude_empty=exclude_empty)


def load_msseg2016_test(root: str | Path, *, exclude_empty: bool = True) -> list[Scan]:
    """MSSEG 2016 test set (``root/Testing``; adds center 03). Scans whose consensus is
    empty are reported and left out, as the paper does."""
    return _load_msseg(Path(root), "Testing", "msseg2016_test", exclude_empty=exclude_empty)


def load_3dmrms(root: str | Path) -> list[Scan]:
    """3D-MR-MS (Lesjak et al. 2018): ``patientXX/patientXX_FLAIR.nii.gz`` with the
    consensus and brain mask beside it; one center."""
    root = _require_dir(root, "3dmrms")
    patients = _children(root, _ci(r"patient(\w+)"), dirs=True)
    if not patients:
        raise DatasetError(f"{root}: no patientXX folders (3D-MR-MS layout)")
    scans = []
    for pdir, m in patients:
        xx = m.group(1)
        flair = _find_one(pdir, rf"patient{xx}_FLAIR", what="FLAIR")
        consensus = _find_one(
            pdir, rf"patient{xx}_consensus_gt", what="consensus mask", required=False
        )
        if consensus is None:
            raise DatasetError(
                f"{flair}: FLAIR without its mask (expected patient{xx}_consensus_gt.nii.gz)"
            )
        brain = _find_one(pdir, rf"patient{xx}_brainmask", what="brain mask", required=False)
        scans.append(Scan("3dmrms", xx, "01", "ljubljana", flair, {"consensus": consensus}, brain))
    return _check_unique(scans, root)


#: How ``load_bids`` names a derivatives mask by its ``desc`` label (case-insensitive):
#: ``consensus``, ``rater<K>`` and ``brain`` (the brain mask).
BIDS_MASK_LABELS = re.compile(r"consensus|rater[1-9]\d*|brain", re.IGNORECASE)


def load_bids(
    root: str | Path,
    *,
    pipeline: str | None = None,
    dataset: str = "bids",
    center: str = "unknown",
) -> list[Scan]:
    """A BIDS dataset: raw FLAIRs with lesion masks from its derivatives.

    FLAIRs are ``sub-<s>/[ses-<t>/]anat/*_FLAIR.nii[.gz]``; their masks are the files
    ``derivatives/<pipeline>/sub-<s>/[ses-<t>/]anat/<entities>[_space-orig]_desc-<label>_mask.nii[.gz]``
    with the FLAIR's entities, where ``<label>`` is ``consensus``, ``rater<K>`` (the mask
    names of every adapter) or ``brain`` (the brain mask); other ``desc`` labels and
    masks in another ``space`` are not lesion masks of the scan and are left aside.

    The subject is the ``sub`` label, the timepoint the ``ses`` label (``"01"`` without
    sessions) followed by any other entity of the FLAIR's name (``01_acq-3d``), the center
    the ``center`` (or ``site``) column of ``participants.tsv`` for that subject.

    Parameters
    ----------
    root : path
        The BIDS dataset root (holding ``sub-*`` and ``derivatives/``).
    pipeline : str, optional
        Read masks from ``derivatives/<pipeline>`` only (default: every pipeline folder;
        the same mask in two of them is an error).
    dataset : str, default "bids"
        The dataset name of the scans.
    center : str, default "unknown"
        The center of subjects ``participants.tsv`` does not place.

    Raises
    ------
    DatasetError
        No FLAIR; a FLAIR without any lesion mask; a mask found twice; an unreadable
        ``participants.tsv``; an unknown ``pipeline``. The message names the file.
    """
    root = _require_dir(root, "bids")
    flairs = find_flairs(root)
    if not flairs:
        raise DatasetError(
            f"{root}: no FLAIR images (BIDS layout: sub-*/[ses-*/]anat/*_FLAIR.nii[.gz])"
        )
    masks = _bids_masks(root, pipeline)
    try:
        participants = read_participants(root)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    scans = []
    for flair in flairs:
        name = parse_name(flair)
        found = dict(masks.get(name.source, {}))
        brain = found.pop("brain", None)
        if not found:
            raise DatasetError(
                f"{flair}: FLAIR without a lesion mask (expected derivatives/<pipeline>/.../"
                f"{name.stem(dict(name.source))}_desc-consensus_mask.nii.gz or desc-rater<K>)"
            )
        ents = dict(name.source)
        sub, ses = ents.pop("sub"), ents.pop("ses", "01")
        timepoint = "_".join([ses, *(f"{k}-{v}" for k, v in ents.items())])
        row = participants.get(sub, {})
        site = next((row[k] for k in row if k.lower() in ("center", "site")), "")
        site = center if site.lower() in ("", "n/a") else site
        scans.append(Scan(dataset, sub, timepoint, site, flair, found, brain))
    return _check_unique(scans, root)


def _bids_masks(root: Path, pipeline: str | None) -> dict[tuple, dict[str, Path]]:
    """The derivatives masks of a BIDS dataset, ``{source entities: {mask name: path}}``."""
    deriv = root / "derivatives"
    if pipeline is not None:
        if not (deriv / pipeline).is_dir():
            raise DatasetError(f"{deriv / pipeline}: no such derivatives pipeline folder")
        pipelines = [deriv / pipeline]
    else:
        pipelines = sorted(p for p in deriv.iterdir() if p.is_dir()) if deriv.is_dir() else []
    masks: dict[tuple, dict[str, Path]] = {}
    for folder in pipelines:
        for pattern in ("sub-*/anat/*_mask.nii*", "sub-*/ses-*/anat/*_mask.nii*"):
            for path in sorted(folder.glob(pattern)):
                name = parse_name(path)
                if name is None or name.suffix != "mask" or not name.extension.startswith(".nii"):
                    continue
                desc = name.entities.get("desc", "")
                if name.entities.get("space", "orig") != "orig":
                    continue
                if not BIDS_MASK_LABELS.fullmatch(desc):
                    continue
                label = desc.lower()
                known = masks.setdefault(name.source, {})
                if label in known:
                    raise DatasetError(f"{path}: a second {label} mask (the first: {known[label]})")
                known[label] = path
    return masks


def load_folder(
    root: str | Path,
    *,
    flair: str,
    masks: dict[str, str] | None = None,
    brain_mask: str | None = None,
    pattern: str = r"(?P<subject>[^/]+)",
    dataset: str = "folder",
    center: str = "unknown",
) -> list[Scan]:
    """Any tree of FLAIR + mask files.

    Parameters
    ----------
    root : path
    flair : str
        Glob (relative to ``root``, ``**`` allowed) matching the FLAIR files.
    masks : dict of str to str
        Mask name -> pattern; ``{stem}`` in the pattern is replaced by the FLAIR's path
        relative to ``root`` without its extension, ``{dir}`` by its folder. Example:
        ``{"consensus": "{dir}/lesions.nii.gz"}``.
    brain_mask : str, optional
        Pattern as for ``masks``.
    pattern : str
        Regular expression searched in the FLAIR's path relative to ``root``; named groups
        ``subject`` (required), ``timepoint`` and ``center`` (optional).
    """
    root = _require_dir(root, "folder")
    regex = _folder_regex(pattern)
    for name, mp in [*(masks or {}).items(), *([("brain", brain_mask)] if brain_mask else [])]:
        _check_placeholders(name, mp)
    if not flair or Path(flair).is_absolute():
        raise DatasetError(f"FLAIR glob {flair!r} must be a non-empty path relative to {root}")
    try:
        files = sorted(p for p in root.glob(flair) if p.is_file())
    except (ValueError, NotImplementedError) as exc:
        raise DatasetError(f"FLAIR glob {flair!r} is not a valid pattern: {exc}") from exc
    if not files:
        raise DatasetError(f"{root}: no file matches the FLAIR pattern {flair!r}")
    scans = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        m = regex.search(rel)
        if not m:
            raise DatasetError(f"{f}: path does not match the subject pattern {pattern!r}")
        stem = re.sub(NIFTI_RE + "$", "", rel, flags=re.IGNORECASE)
        fmt = {"stem": stem, "dir": Path(rel).parent.as_posix()}
        found = {}
        for name, mp in (masks or {}).items():
            path = root / mp.format(**fmt)
            if not path.is_file():
                raise DatasetError(f"{f}: FLAIR without its {name} mask (expected {path})")
            found[name] = path
        bpath = None
        if brain_mask:
            bpath = root / brain_mask.format(**fmt)
            if not bpath.is_file():
                raise DatasetError(f"{f}: brain mask not found (expected {bpath})")
        g = m.groupdict()
        scans.append(
            Scan(
                dataset,
                g["subject"],
                g.get("timepoint") or "01",
                g.get("center") or center,
                f,
                found,
                bpath,
            )
        )
    return _check_unique(scans, root)


def _folder_regex(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(
            f"folder pattern (--pattern) {pattern!r} is not a valid regular expression: {exc}"
        ) from exc
    if "subject" not in regex.groupindex:
        raise DatasetError(f"folder pattern {pattern!r} has no (?P<subject>...) group")
    return regex


#: The placeholders of the folder adapter's mask patterns.
FOLDER_PLACEHOLDERS = ("stem", "dir")


def _check_placeholders(name: str, pattern: str) -> None:
    """Refuse a mask pattern with a malformed or unknown ``{placeholder}``."""
    what = "brain mask pattern" if name == "brain" else f"{name} mask pattern"
    known = ", ".join("{" + p + "}" for p in FOLDER_PLACEHOLDERS)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise DatasetError(
            f"{what} {pattern!r}: {exc} (use {known}; write {{{{ and }}}} for braces)"
        ) from exc
    for f in fields:
        if f not in FOLDER_PLACEHOLDERS:
            raise DatasetError(f"{what} {pattern!r}: unknown placeholder {{{f}}} (use {known})")


ADAPTERS: dict[str, Callable[..., list[Scan]]] = {
    "isbi2015": load_isbi2015,
    "msseg2016_train": load_msseg2016_train,
    "msseg2016_test": load_msseg2016_test,
    "3dmrms": load_3dmrms,
    "bids": load_bids,
    "folder": load_folder,
}


@dataclass(frozen=True)
class DatasetInfo:
    """A public dataset msnb knows by name.

    Attributes
    ----------
    name : str
        The dataset's name in study files, results and model ids.
    adapter : str
        Its adapter in :data:`ADAPTERS`.
    folder : str
        Its folder under a data root (``MSNB_DATA``) or a generated phantom.
    consensus_fallback : str or None
        The label ``consensus`` means on this dataset when it ships no consensus mask
        (ISBI 2015: ``union``, the union of its two raters, as in the paper).
    """

    name: str
    adapter: str
    folder: str
    consensus_fallback: str | None = None


#: The one registry of named datasets: the four public datasets of the paper.
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("isbi2015", "isbi2015", "isbi2015", consensus_fallback="union"),
        DatasetInfo("msseg2016_train", "msseg2016_train", "msseg2016"),
        DatasetInfo("msseg2016_test", "msseg2016_test", "msseg2016"),
        DatasetInfo("3dmrms", "3dmrms", "3dmrms"),
    )
}
#: Datasets without a consensus mask: the label their ``consensus`` means.
CONSENSUS_FALLBACK = {
    name: d.consensus_fallback for name, d in DATASETS.items() if d.consensus_fallback
}


def load_scans(adapter: str, root: str | Path, **options) -> list[Scan]:
    """Read a dataset folder with the named adapter (see :data:`ADAPTERS`)."""
    if adapter not in ADAPTERS:
        raise DatasetError(
            f"unknown dataset adapter {adapter!r}; choose from {', '.join(ADAPTERS)}"
        )
    return ADAPTERS[adapter](root, **options)


def check_scans(scans: Sequence[Scan]) -> list[tuple[str, str]]:
    """Open and validate every file of ``scans``, as training and testing will read them.

    Per scan: the FLAIR is read whole (header, data, finite voxels; an anisotropic or
    oblique grid warns, see :func:`msnb.nifti.load_image`); each lesion mask must be
    binary and have the FLAIR's shape and affine; the brain mask, when there is one, must
    have them too and not be empty. A file's first problem is reported; a FLAIR that
    cannot be read leaves its masks checked on their own.

    Returns
    -------
    list of (str, str)
        ``(scan_id, "<file>: <problem>")`` for every problem found; empty when all is well.
    """
    problems = []
    for scan in scans:
        found = []
        try:
            flair = load_image(scan.flair)
        except NiftiError as exc:
            found.append(str(exc))
            flair = None
        checks = [(path, {"what": f"{name} mask"}) for name, path in scan.masks.items()]
        if scan.brain_mask is not None:
            brain = {"what": "brain mask", "binarize": True, "allow_empty": False}
            checks.append((scan.brain_mask, brain))
        for path, options in checks:
            try:
                load_mask(path, reference=flair, **options)
            except NiftiError as exc:
                found.append(str(exc))
        problems += [(scan.scan_id, " ".join(msg.split())) for msg in found]
    return problems


def scans_table(scans: Sequence[Scan]):
    """A pandas DataFrame with one row per scan."""
    import pandas as pd

    return pd.DataFrame([s.as_row() for s in scans])


# --------------------------------------------------------------------------- CLI


def _mask_options(items: Sequence[str]) -> dict[str, str]:
    masks = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        if not (sep and name.strip() and pattern.strip()):
            raise DatasetError(
                f"--mask {item!r}: expected NAME=PATTERN, e.g. consensus={{dir}}/lesions.nii.gz"
            )
        masks[name.strip()] = pattern.strip()
    return masks


def _report_check(scans: Sequence[Scan], out=None) -> None:
    """Print every problem of ``scans`` (stderr); raise DatasetError when there is one.

    ``out``: where "no problem" is said (default stdout).
    """
    problems = check_scans(scans)
    if not problems:
        print(f"{len(scans)} scans checked: no problem found", file=out)
        return
    for _, message in problems:
        print(message, file=sys.stderr)
    bad = len({scan_id for scan_id, _ in problems})
    raise DatasetError(f"{len(problems)} problems in {bad} of {len(scans)} scans")


def _cli_scans(args: argparse.Namespace) -> int:
    options = {}
    if args.adapter == "folder":
        if not args.flair:
            raise DatasetError("the folder adapter needs --flair GLOB")
        options = {
            "flair": args.flair,
            "masks": _mask_options(args.mask),
            "brain_mask": args.brain_mask,
            "pattern": args.pattern,
        }
    elif args.adapter == "bids" and args.pipeline:
        options = {"pipeline": args.pipeline}
    scans = load_scans(args.adapter, args.root, **options)
    table = scans_table(scans)
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        short = table.drop(columns=["brain_mask"]).assign(flair=[Path(p).name for p in table.flair])
        print(short.to_string(index=False))
        print(
            f"{len(scans)} scans, {table.subject.nunique()} subjects, {table.center.nunique()} centers"
        )
    if args.check:
        _report_check(scans, out=sys.stderr if args.format == "csv" else sys.stdout)
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("scans", help="list (and check) the scans of a dataset folder")
    p.add_argument("adapter", choices=sorted(ADAPTERS), help="dataset layout")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--format", choices=["table", "csv"], default="table")
    p.add_argument(
        "--check",
        action="store_true",
        help="open every file: NIfTI readable, masks binary and on the FLAIR's grid; "
        "list every problem (exit 1 if any)",
    )
    p.add_argument("--flair", help="folder adapter: glob of FLAIR files")
    p.add_argument(
        "--mask", action="append", default=[], metavar="NAME=PATTERN", help="folder adapter"
    )
    p.add_argument("--brain-mask", help="folder adapter: brain mask pattern")
    p.add_argument("--pattern", default=r"(?P<subject>[^/]+)", help="folder adapter: subject regex")
    p.add_argument(
        "--pipeline", help="bids adapter: read masks from derivatives/PIPELINE only (default: all)"
    )
    p.set_defaults(func=_cli_scans)
