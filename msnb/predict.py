"""Whole-scan prediction with a model bundle and evaluation over a dataset.

A scan is predicted the way training slices were made: canonical (RAS+) orientation, brain
mask, the bundle's normalization (its saved quantile reference), the axial slices holding
brain (``min_brain_fraction`` of the bundle) cropped to the brain box, padded and resized
to S x S. Slice probabilities are resized back (linear), placed in the volume, set to 0
outside the brain mask, and mapped back to the input file's orientation; the binary mask
is ``probability >= threshold`` (the bundle's, 0.5 by default). ``msnb segment`` is
:mod:`msnb.segment`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from msnb.bundle import Bundle, load_bundle
from msnb.datasets import load_label
from msnb.device import autocast as autocast_context
from msnb.device import pick_device, resolve_speedups
from msnb.docs import fill_doc
from msnb.metrics import RESULT_COLUMNS, compute_metrics, result_row, results_frame
from msnb.nifti import (
    NiftiError,
    Volume,
)
from msnb.preprocess import compute_brain_mask, load_flair
from msnb.slices import brain_slices, compute_geometry, from_model_plane, to_model_plane

__all__ = [
    "RESULT_COLUMNS",  # the results schema (msnb.metrics), as notebook 04 reads it from here
    "Prediction",
    "check_batch_size",
    "check_threshold",
    "evaluate_scans",
    "infer_slices",
    "predict_scan",
    "predict_volume",
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


def check_threshold(threshold) -> float:
    """``threshold`` as a float, checked to be a number in (0, 1] (ValueError otherwise)."""
    ok = isinstance(threshold, int | float | np.number) and not isinstance(threshold, bool)
    if not ok or not 0 < float(threshold) <= 1:
        raise ValueError(f"threshold (--threshold) must be a number in (0, 1], got {threshold!r}")
    return float(threshold)


def check_batch_size(batch_size) -> None:
    """Raise ValueError unless ``batch_size`` is a positive integer."""
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

    check_batch_size(batch_size)
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


def _infer_planes(planes, bundle, network, batch_size: int, device: str, autocast):
    """Lesion probabilities of ``planes``: on ``network`` (ONNX Runtime) when given, else on
    the bundle's torch model."""
    if network is not None:
        return network.infer(planes, batch_size=batch_size)
    model, device = bundle.load_model(), pick_device(device)
    return infer_slices(model, planes, batch_size=batch_size, device=device, autocast=autocast)


@fill_doc
def predict_volume(
    flair: Volume,
    bundle: Bundle | str | os.PathLike,
    *,
    brain: np.ndarray | None = None,
    batch_size: int = 16,
    device: str = "auto",
    autocast: str | None = None,
    threshold: float | None = None,
    network=None,
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
    threshold : float in (0, 1], optional
        The mask is ``probability >= threshold``; default: the bundle's.
    network : OnnxNetwork, optional
        Infer with it (:func:`msnb.onnxrt.open_backend`: the bundle's network on ONNX
        Runtime, float32 on the CPU; ``device`` and ``autocast`` do not apply) instead of
        the bundle's torch model.

    Returns
    -------
    Prediction
    """
    bundle = _as_bundle(bundle)
    autocast = bundle.precision if autocast is None else autocast
    threshold = bundle.threshold if threshold is None else check_threshold(threshold)
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
    probs = _infer_planes(planes, bundle, network, batch_size, device, autocast)
    t["infer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prob = np.zeros(flair.shape, dtype=np.float32)
    prob[:, :, zs] = from_model_plane(probs, geom, flair.shape[:2])
    prob[~brain] = 0
    np.clip(prob, 0, 1, out=prob)
    mask = prob >= threshold
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
        seconds = {f"seconds_{k}": v for k, v in stages.items()}
        rows.append(
            result_row(
                ident,
                scan,
                m,
                test_dataset=test_dataset,
                label=label,
                seconds=time.perf_counter() - t0,
                **seconds,
            )
        )
        if keep_predictions:
            pred.truth = truth
            preds[scan.scan_id] = pred
    table = results_frame(rows)
    return (table, preds) if keep_predictions else table
