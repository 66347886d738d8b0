"""What a phantom holds: one task per scan, with the files it writes in the real layouts.

The four simulated datasets are written in their public datasets' layouts (so that the
adapters of :mod:`msnb.datasets` read them unchanged), under the folders of
:data:`msnb.datasets.DATASETS`; the noiseless truth goes to ``<folder>/truth/``
(docs/phantom.md section 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from msnb.datasets import DATASETS
from msnb.phantom.config import DatasetSpec, PhantomConfig, seeded_rng

__all__ = ["NIFTI_EXT", "ScanTask", "dataset_folder", "scan_tasks"]

NIFTI_EXT = ".nii.gz"


@dataclass(frozen=True)
class ScanTask:
    """What one worker call produces: one scan, written under ``files``' keys.

    Attributes
    ----------
    dataset : str
        Dataset key (``isbi2015`` ...).
    subject_index : int
        Position of the subject in its dataset (0-based, over all centers).
    subject : str
        Subject id as the dataset's adapter reports it (``01``, ``01_02`` for MSSEG).
    timepoint : int
        1-based.
    center : str
        Center name (a key of :data:`msnb.phantom.CENTERS`).
    load_ml : float
        Target total lesion load of the subject.
    files : dict of str to str
        Role (``flair``, ``brain``, ``truth``, ``tissue``, ``consensus``, ``raterK``) to
        the path relative to the dataset's folder.
    """

    dataset: str
    subject_index: int
    subject: str
    timepoint: int
    center: str
    load_ml: float
    files: dict[str, str]


def dataset_folder(key: str) -> str:
    """The folder of dataset ``key`` inside a phantom (as under a real data root)."""
    return DATASETS[key].folder


def _subject_loads(spec: DatasetSpec, cfg: PhantomConfig, seed: int) -> np.ndarray:
    """Target loads (mL): stratified quantiles of the dataset's log-normal, shuffled."""
    rng = seeded_rng(seed, spec.key, "loads")
    n = spec.n_subjects
    u = (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n
    # ndtri: the standard normal quantile (scipy.stats.norm.ppf, without importing stats)
    loads = np.exp(np.log(spec.load_median_ml) + spec.load_sigma * ndtri(u))
    return np.clip(loads, *cfg.lesions.load_range_ml)


def scan_tasks(cfg: PhantomConfig, seed: int) -> list[ScanTask]:
    """Every scan of a phantom, in dataset, subject and timepoint order."""
    tasks = []
    for spec in cfg.datasets:
        loads = _subject_loads(spec, cfg, seed)
        i = 0
        for cname, count in spec.centers:
            label = cfg.centers[cname].label
            for p in range(1, count + 1):
                tps = spec.timepoints[i % len(spec.timepoints)]
                for t in range(1, tps + 1):
                    tasks.append(_task(spec, i, cname, label, p, t, float(loads[i])))
                i += 1
    return tasks


def _isbi_files(i: int, t: int) -> tuple[str, dict[str, str]]:
    nn, tt, ext = f"{i + 1:02d}", f"{t:02d}", NIFTI_EXT
    base = f"training/training{nn}"
    return nn, {
        "flair": f"{base}/preprocessed/training{nn}_{tt}_flair_pp{ext}",
        "rater1": f"{base}/masks/training{nn}_{tt}_mask1{ext}",
        "rater2": f"{base}/masks/training{nn}_{tt}_mask2{ext}",
        "truth": f"truth/training{nn}_{tt}_truth{ext}",
        "tissue": f"truth/training{nn}_{tt}_tissue{ext}",
    }


def _msseg_files(spec: DatasetSpec, label: str, p: int) -> tuple[str, dict[str, str]]:
    ext = NIFTI_EXT
    split = "Training" if spec.key.endswith("train") else "Testing"
    pdir = f"{split}/Center_{label}/Patient_{p:02d}"
    return f"{label}_{p:02d}", {
        "flair": f"{pdir}/Preprocessed_Data/FLAIR_preprocessed{ext}",
        "consensus": f"{pdir}/Masks/Consensus{ext}",
        "brain": f"{pdir}/Masks/Brain_Mask{ext}",
        **{f"rater{k}": f"{pdir}/Masks/ManualSegmentation_{k}{ext}"
           for k in range(1, spec.raters.n_raters + 1)},
        "truth": f"truth/{split}/Center_{label}_Patient_{p:02d}_truth{ext}",
        "tissue": f"truth/{split}/Center_{label}_Patient_{p:02d}_tissue{ext}",
    }  # fmt: skip


def _mrms_files(i: int) -> tuple[str, dict[str, str]]:
    xx, ext = f"{i + 1:02d}", NIFTI_EXT
    return xx, {
        "flair": f"patient{xx}/patient{xx}_FLAIR{ext}",
        "consensus": f"patient{xx}/patient{xx}_consensus_gt{ext}",
        "brain": f"patient{xx}/patient{xx}_brainmask{ext}",
        "truth": f"truth/patient{xx}_truth{ext}",
        "tissue": f"truth/patient{xx}_tissue{ext}",
    }


def _task(spec: DatasetSpec, i: int, cname: str, label: str, p: int, t: int, load: float):
    if spec.key == "isbi2015":
        subject, files = _isbi_files(i, t)
    elif spec.key.startswith("msseg2016"):
        subject, files = _msseg_files(spec, label, p)
    else:
        subject, files = _mrms_files(i)
    return ScanTask(spec.key, i, subject, t, cname, load, files)
