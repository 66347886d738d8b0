"""Whole-scan prediction with a model bundle, evaluation over a dataset, and ``msnb segment``.

A scan is predicted the way training slices were made: canonical (RAS+) orientation, brain
mask, the bundle's normalization (its saved quantile reference), the axial slices holding
brain (``min_brain_fraction`` of the bundle) cropped to the brain box, padded and resized
to S x S. Slice probabilities are resized back (linear), placed in the volume, set to 0
outside the brain mask, and mapped back to the input file's orientation; the binary mask
is ``probability >= threshold`` (the bundle's, 0.5 by default).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msnb.bundle import Bundle, load_bundle
from msnb.datasets import load_label
from msnb.device import autocast as autocast_context
from msnb.device import pick_device, resolve_speedups
from msnb.docs import fill_doc
from msnb.files import atomic_path
from msnb.metrics import RESULT_COLUMNS, compute_metrics, lesion_table
from msnb.nifti import (
    NiftiError,
    OutputError,
    Volume,
    check_output_dir,
    load_image,
    load_mask,
    save_image,
    save_mask,
)
from msnb.preprocess import compute_brain_mask, load_flair
from msnb.slices import brain_slices, compute_geometry, from_model_plane, to_model_plane

__all__ = [
    "Prediction",
    "evaluate_scans",
    "infer_slices",
    "predict_scan",
    "predict_volume",
    "segment_file",
]


@dataclass
class Prediction:
    """A predicted scan.

    Attributes
    ----------
    probability, mask : np.ndarray, shape ``volume.original_shape``
        On the input file's voxel grid (float32 in [0, 1], bool).
    affine : np.ndarray, shape (4, 4)
        The input file's affine.
    volume : Volume
        The input (canonical data and the way back).
    probability_canonical, mask_canonical : np.ndarray, shape ``volume.shape``
        The same on the canonical grid (for comparison with canonical labels).
    brain : np.ndarray of bool, shape ``volume.shape``
        Brain mask used (canonical).
    seconds : dict
        Timings of the steps.
    truth : np.ndarray of bool or None, shape ``volume.shape``
        The canonical label, set by :func:`evaluate_scans`.
    """

    probability: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    volume: Volume
    probability_canonical: np.ndarray = field(repr=False)
    mask_canonical: np.ndarray = field(repr=False)
    brain: np.ndarray = field(repr=False)
    seconds: dict = field(default_factory=dict)
    truth: np.ndarray | None = field(default=None, repr=False)


def _as_bundle(bundle: Bundle | str | os.PathLike) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(
            f"batch size (--batch-size) must be a positive integer, got {batch_size!r}"
        )
    if batch_size < 1:
        raise ValueError(f"batch size (--batch-size) must be a positive integer, got {batch_size}")


@fill_doc
def infer_slices(
    model,
    planes: np.ndarray,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    channels_last: bool = True,
    autocast: str = "none",
) -> np.ndarray:
    """Sigmoid probabilities of the model on slices.

    Parameters
    ----------
    model : torch.nn.Module
    planes : np.ndarray, shape (S, S, Z)
        Normalized slices in the model plane.
    %(batch_size)s
    device : str, default "cpu"
        A concrete device (see :func:`msnb.device.pick_device`).
    channels_last : bool, default True
        Use the channels-last memory format (``"auto"``: on CUDA only).
    %(autocast)s

    Returns
    -------
    np.ndarray of float32, shape (S, S, Z)
    """
    import torch

    _check_batch_size(batch_size)
    cl, ac = resolve_speedups(device, channels_last=channels_last, autocast=autocast)
    model = model.to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    z = planes.shape[2]
    out = np.zeros(planes.shape, dtype=np.float32)
    stack = np.ascontiguousarray(np.moveaxis(planes, 2, 0))[:, None]
    with torch.inference_mode():
        for i in range(0, z, batch_size):
            x = torch.from_numpy(stack[i : i + batch_size]).to(device)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, ac):
                logits = model(x)
            prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
            out[:, :, i : i + batch_size] = np.moveaxis(prob, 0, 2)
    return out


@fill_doc
def predict_volume(
    flair: Volume,
    bundle: Bundle | str | os.PathLike,
    *,
    brain: np.ndarray | None = None,
    batch_size: int = 16,
    device: str = "auto",
    autocast: str | None = None,
) -> Prediction:
    """Predict lesions on a FLAIR volume.

    Parameters
    ----------
    flair : Volume
        From :func:`msnb.nifti.load_image` (canonical data).
    %(bundle)s
    brain : np.ndarray of bool, shape ``flair.shape``, optional
        Canonical brain mask; computed with :func:`msnb.preprocess.compute_brain_mask` when
        missing.
    %(batch_size)s
    %(device)s
    autocast : {"auto", "bf16", "fp16", "none"} or None, default None
        Precision of the forward pass; None: the one the model was trained in
        (:attr:`msnb.bundle.Bundle.precision`), so that a study's evaluations run in its
        declared precision on every machine.

    Returns
    -------
    Prediction
    """
    bundle = _as_bundle(bundle)
    autocast = bundle.precision if autocast is None else autocast
    t = {}
    t0 = time.perf_counter()
    if brain is None:
        brain = compute_brain_mask(flair.data)
        if not brain.any():
            raise NiftiError(flair.path, "computed brain mask is empty (image is all zero?)")
    brain = np.asarray(brain, dtype=bool)
    if brain.shape != flair.shape:
        raise ValueError(f"brain mask shape {brain.shape} does not match the image {flair.shape}")
    t["brain"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    image = bundle.normalizer(flair.data, brain)
    t["normalize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    geom = compute_geometry(brain, bundle.size, crop=bundle.slice_crop)
    zs = brain_slices(brain, min_brain_fraction=bundle.min_brain_fraction)
    planes = to_model_plane(image[:, :, zs], geom)
    t["slice"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = infer_slices(
        bundle.model, planes, batch_size=batch_size, device=pick_device(device), autocast=autocast
    )
    t["infer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prob = np.zeros(flair.shape, dtype=np.float32)
    prob[:, :, zs] = from_model_plane(probs, geom, flair.shape[:2])
    prob[~brain] = 0
    np.clip(prob, 0, 1, out=prob)
    mask = prob >= bundle.threshold
    t["unslice"] = time.perf_counter() - t0
    return Prediction(
        probability=flair.to_original(prob),
        mask=flair.to_original(mask),
        affine=np.asarray(flair.original_affine),
        volume=flair,
        probability_canonical=prob,
        mask_canonical=mask,
        brain=brain,
        seconds=t,
    )


def predict_scan(scan, bundle: Bundle | str | os.PathLike, **options) -> Prediction:
    """Predict a dataset scan, read with its dataset's preprocessing (:func:`msnb.preprocess.load_flair`).

    Its :attr:`Prediction.seconds` start with ``read``: the FLAIR and brain mask read.
    """
    t0 = time.perf_counter()
    flair, brain = load_flair(scan)
    read = time.perf_counter() - t0
    pred = predict_volume(flair, bundle, brain=brain, **options)
    pred.seconds = {"read": read, **pred.seconds}
    return pred


@fill_doc
def evaluate_scans(
    bundle: Bundle | str | os.PathLike,
    scans: Sequence,
    *,
    test_dataset: str | None = None,
    label: str = "consensus",
    progress: bool = True,
    keep_predictions: bool = False,
    **options,
):
    """Predict and score every scan; one row per scan.

    Parameters
    ----------
    %(bundle)s
    scans : sequence of Scan
    test_dataset : str, optional
        Name in the ``test_dataset`` column (default: each scan's ``dataset``).
    label : str, default "consensus"
        Truth to score against (see :func:`msnb.datasets.label_sources`).
    keep_predictions : bool, default False
        Also return ``{scan_id: Prediction}``.

    Returns
    -------
    pandas.DataFrame (and dict when ``keep_predictions``)
        :data:`RESULT_COLUMNS` first, then ``scan_id``, ``eval_label``, ``status``, lesion
        counts, voxel counts, ``seconds`` and the seconds of its stages: ``seconds_read``
        (FLAIR and brain mask, with the dataset's preprocessing), those of
        :attr:`Prediction.seconds` (``brain``, ``normalize``, ``slice``, ``infer``,
        ``unslice``) and ``seconds_score`` (truth read and metrics).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    bundle = _as_bundle(bundle)
    ident = bundle.describe()
    rows, preds = [], {}
    for scan in tqdm(list(scans), desc="evaluating", disable=not progress):
        t0 = time.perf_counter()
        pred = predict_scan(scan, bundle, **options)
        t_pred = time.perf_counter()
        truth = load_label(scan, label, reference=pred.volume).data
        m = compute_metrics(
            truth, pred.mask_canonical, voxel_volume_mm3=pred.volume.voxel_volume_ml * 1000.0
        )
        stages = {**pred.seconds, "score": time.perf_counter() - t_pred}
        rows.append(
            {
                **ident,
                "test_dataset": test_dataset or scan.dataset,
                "subject": scan.subject,
                "timepoint": scan.timepoint,
                "center": scan.center,
                **m.as_dict(),
                "scan_id": scan.scan_id,
                "eval_label": label,
                "seconds": time.perf_counter() - t0,
                **{f"seconds_{k}": v for k, v in stages.items()},
            }
        )
        if keep_predictions:
            pred.truth = truth
            preds[scan.scan_id] = pred
    table = pd.DataFrame(rows)
    if len(table):
        table = table[RESULT_COLUMNS + [c for c in table.columns if c not in RESULT_COLUMNS]]
    else:
        table = pd.DataFrame(columns=RESULT_COLUMNS)
    return (table, preds) if keep_predictions else table


# --------------------------------------------------------------------------- CLI


def _output_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


@fill_doc
def segment_file(
    flair_path: str | os.PathLike,
    bundle: Bundle | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    brain_mask: str | os.PathLike | None = None,
    probabilities: bool = False,
    batch_size: int = 16,
    device: str = "auto",
) -> dict:
    """Segment one FLAIR file and write its outputs into ``out_dir``.

    Writes ``<stem>_lesions.nii.gz`` (uint8, the input's shape, affine and header),
    ``<stem>_lesions.csv`` (id, voxels, ml, centroid x/y/z in world mm) and, with
    ``probabilities``, ``<stem>_probability.nii.gz`` (float32). The batch size, device and
    output folder are checked before any work; the outputs are written to temporaries and
    renamed only when all of them are written, so a failure (a full disk) leaves none.

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
        Also write the probability map.
    %(batch_size)s
    %(device)s

    Returns
    -------
    dict
        ``input``, ``mask``, ``table``, ``probability``, ``lesions``, ``volume_ml``,
        ``seconds``.

    Raises
    ------
    ValueError
        ``batch_size`` is not a positive integer.
    msnb.device.DeviceError
        ``device`` is unknown or not available here.
    msnb.nifti.OutputError
        ``out_dir`` is (under) a file or not writable, or an output could not be written.
    msnb.bundle.BundleError, msnb.nifti.NiftiError
        A damaged bundle; an unreadable or unusable input.
    """
    t0 = time.perf_counter()
    _check_batch_size(batch_size)
    device = pick_device(device)
    out = check_output_dir(out_dir, what="--out folder")
    bundle = _as_bundle(bundle)
    flair_path = Path(flair_path)
    flair = load_image(flair_path)
    brain = None
    if brain_mask is not None:
        brain = load_mask(
            brain_mask, reference=flair, binarize=True, allow_empty=False, what="brain mask"
        ).data
    pred = predict_volume(flair, bundle, brain=brain, batch_size=batch_size, device=device)
    table = lesion_table(pred.mask, pred.affine)
    paths = _write_outputs(out / _output_stem(flair_path), flair, pred, table, probabilities)
    return {
        "input": str(flair_path),
        "mask": str(paths["mask"]),
        "table": str(paths["table"]),
        "probability": str(paths["probability"]) if probabilities else None,
        "lesions": int(len(table)),
        "volume_ml": float(table.ml.sum()) if len(table) else 0.0,
        "seconds": time.perf_counter() - t0,
        "steps": pred.seconds,
    }


def _write_outputs(base: Path, flair, pred, table, probabilities: bool) -> dict[str, Path]:
    """Write ``<base>_lesions.nii.gz``, ``<base>_lesions.csv`` and, with ``probabilities``,
    ``<base>_probability.nii.gz`` on ``flair``'s grid, all or none (:func:`_write_all`);
    returns their paths by role."""
    paths = {"mask": base.parent / f"{base.name}_lesions.nii.gz"}
    if probabilities:
        paths["probability"] = base.parent / f"{base.name}_probability.nii.gz"
    paths["table"] = base.parent / f"{base.name}_lesions.csv"
    writers = {
        "mask": lambda tmp: save_mask(pred.mask_canonical, flair, tmp),
        "probability": lambda tmp: save_image(pred.probability_canonical, flair, tmp),
        "table": lambda tmp: table.to_csv(tmp, index=False, float_format="%.3f"),
    }
    _write_all(paths, writers)
    return paths


def _write_all(paths: dict, writers: dict) -> None:
    """Write every output to a temporary beside it; rename them all only when all succeeded.

    Raises
    ------
    OutputError
        A write failed (disk full, read-only...): no output of this call is left, and the
        message names the file.
    """
    current = None
    try:
        with contextlib.ExitStack() as stack:
            for name, path in paths.items():
                current = path
                writers[name](stack.enter_context(atomic_path(path)))
            current = None  # the renames, when the block ends
    except OSError as exc:
        problem = exc.strerror or str(exc) or type(exc).__name__
        target = current if current is not None else Path(exc.filename or paths["mask"])
        raise OutputError(target, f"cannot write: {problem}") from exc


def _cli_segment(args: argparse.Namespace) -> int:
    # everything that can be checked is checked before the first scan is predicted
    _check_batch_size(args.batch_size)
    device = pick_device(args.device)
    check_output_dir(args.out, what="--out folder")
    if args.brain_mask and len(args.flair) > 1:
        raise ValueError("--brain-mask applies to a single input; give one FLAIR file")
    stems = [_output_stem(Path(f)) for f in args.flair]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"several inputs would write the same outputs: {', '.join(twice)}")
    bundle = load_bundle(args.model)
    for f in args.flair:
        res = segment_file(
            f,
            bundle,
            args.out,
            brain_mask=args.brain_mask,
            probabilities=args.probabilities,
            batch_size=args.batch_size,
            device=device,
        )
        print(
            f"{res['input']}: {res['lesions']} lesions, {res['volume_ml']:.2f} mL "
            f"-> {res['mask']} ({res['seconds']:.1f} s)"
        )
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="segment MS lesions in FLAIR NIfTI files with a model bundle",
        description="Write per input a uint8 lesion mask (input's shape and affine), "
        "a lesion table CSV and optionally the probability map.",
    )
    p.add_argument("flair", nargs="+", help="FLAIR NIfTI file(s)")
    p.add_argument("--model", required=True, help="model bundle directory")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--brain-mask", help="brain mask NIfTI (default: computed)")
    p.add_argument("--probabilities", action="store_true", help="also write the probability map")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.set_defaults(func=_cli_segment)
