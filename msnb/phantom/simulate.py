"""One scan in memory: anatomy, lesions, the scanner and the raters, from seeded generators.

Each random stage draws from :func:`~msnb.phantom.config.seeded_rng` keyed by the seed,
the dataset, the subject and (for what changes between scans) the timepoint, so a scan
does not depend on which other scans are simulated, in which order or by which process.
"""

from __future__ import annotations

import numpy as np

from msnb.masks import combine_masks
from msnb.phantom.anatomy import Subject, load_template, make_subject
from msnb.phantom.config import PhantomConfig, seeded_rng
from msnb.phantom.layout import ScanTask
from msnb.phantom.lesions import Lesion, evolve_lesions, generate_lesions, rasterize_lesions
from msnb.phantom.raters import simulate_raters
from msnb.phantom.scanner import apply_center

__all__ = ["TISSUE_LABELS", "simulate_scan", "subject_lesions", "tissue_labels"]

#: Values of the ``tissue`` label map.
TISSUE_LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM", 4: "ventricles"}


def subject_lesions(cfg: PhantomConfig, seed: int, task: ScanTask, sub: Subject) -> list[Lesion]:
    """The subject's lesions at the task's timepoint (generated, then evolved per interval)."""
    lesions = generate_lesions(
        sub, cfg.lesions, seeded_rng(seed, task.dataset, task.subject, "lesions"), task.load_ml
    )
    for t in range(2, task.timepoint + 1):
        rng = seeded_rng(seed, task.dataset, task.subject, "evolve", t)
        lesions = evolve_lesions(sub, lesions, cfg.lesions, rng)
    return lesions


def tissue_labels(sub: Subject) -> np.ndarray:
    """The subject's label map (:data:`TISSUE_LABELS`): the largest fraction, ventricles 4.

    Returns
    -------
    np.ndarray, uint8, shape (X, Y, Z)
    """
    tissue = np.zeros(sub.shape, np.uint8)
    fr = np.stack([sub.csf, sub.gm, sub.wm])
    tissue[sub.brain] = (fr.argmax(0) + 1)[sub.brain]
    tissue[sub.ventricles] = 4
    return tissue


def simulate_scan(cfg: PhantomConfig, seed: int, task: ScanTask) -> dict:
    """Simulate one scan in memory.

    Parameters
    ----------
    cfg : PhantomConfig
    seed : int
    task : ScanTask
        From :func:`msnb.phantom.scan_tasks`.

    Returns
    -------
    dict
        ``flair`` (float32), ``brain``, ``truth``, ``raters`` (list of bool arrays),
        ``consensus`` (bool, or None with two raters or fewer), ``tissue`` (uint8 labels),
        ``subject`` (:class:`Subject`), ``pv``, ``zmap``, ``sd`` (lesion signed distance), ``jitter`` (the scan's center
        values), ``affine``, ``n_generated`` (lesions drawn).
    """
    tpl = load_template(cfg.voxel_mm, cfg.anatomy)
    sub = make_subject(
        tpl, cfg.anatomy, cfg.lesions, seeded_rng(seed, task.dataset, task.subject, "anatomy")
    )
    lesions = subject_lesions(cfg, seed, task, sub)
    sd, pv, zmap = rasterize_lesions(sub, lesions, cfg.lesions)
    truth = pv >= 0.5
    rng = seeded_rng(seed, task.dataset, task.subject, task.timepoint, "scan")
    center = cfg.centers[task.center]
    flair, jit = apply_center(sub, pv, zmap, center, cfg.lesions, cfg.jitter, rng, sd)
    spec = cfg.dataset(task.dataset)
    allowed = sub.brain & ~sub.ventricles & (sub.csf < 0.5)
    fp_region = (sub.wm > 0.9) & (sd > 3.0)
    rng = seeded_rng(seed, task.dataset, task.subject, task.timepoint, "raters")
    raters = simulate_raters(sd, truth, allowed, fp_region, sub.voxel_mm, spec.raters, rng)
    consensus = None
    if spec.raters.n_raters > 2:
        consensus = combine_masks(raters, method=spec.raters.consensus)
    return {
        "flair": flair, "brain": sub.brain, "truth": truth, "raters": raters,
        "consensus": consensus, "tissue": tissue_labels(sub), "subject": sub, "pv": pv,
        "zmap": zmap, "sd": sd, "jitter": jit, "affine": sub.affine, "n_generated": len(lesions),
    }  # fmt: skip
