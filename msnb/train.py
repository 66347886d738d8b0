"""Training a 2D slice segmentation model with the paper's recipe, into a model bundle.

The recipe and its defaults are :class:`msnb.recipe.TrainConfig`. Validation Dice is pooled
over all validation slices (in the model plane): ``2 sum|P & T| / (sum|P| + sum|T|)``. Ties
keep the later epoch when its validation loss is lower.

Device, autocast and seeding come from :mod:`msnb.device`: on the CPU, training uses all
cores, in float32 unless the configuration asks for bf16 (``autocast``; ``"auto"``: bf16
where the processor supports it); the loss is always computed in float32. The bundle records
the precision used, and predictions with it use the same. The same seed on the CPU gives the
same weights (same precision, thread count and library versions)."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from msnb.bundle import CALIBRATION_PLANES, save_bundle
from msnb.datasets import Scan
from msnb.device import autocast as autocast_context
from msnb.device import pick_device, resolve_speedups, seed_everything
from msnb.masks import lesion_slices
from msnb.models import build_model, describe_weights, weighted_bce_with_logits
from msnb.normalize import build_reference, build_template_reference, get_normalizer
from msnb.paths import cache_root
from msnb.predict import infer_slices
from msnb.preprocess import load_flair
from msnb.recipe import TrainConfig
from msnb.slices import build_slice_store, split_by_patient
from msnb.sources import load_datasets, resolve_datasets

__all__ = [
    "TrainConfig",
    "TrainResult",
    "build_normalizer",
    "data_summary",
    "ensure_demo_bundle",
    "evaluate_slices",
    "train_model",
    "validation_examples",
    "write_bundle",
]


# --------------------------------------------------------------------------- loop


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The best-validation-Dice model (eval mode, CPU).
    history : pandas.DataFrame
        One row per epoch: epoch, train_loss, val_loss, val_dice, val_mean_slice_dice, lr,
        slices, seconds (the epoch with its validation), val_seconds, partial (epoch cut by
        the time budget).
    best_epoch : int
    best_val_dice : float
    stopped_by_budget : bool
    train_patients, val_patients : list of str
    normalizer : Normalizer
    store : SliceStore
    bundle_path : Path or None
    config : TrainConfig
    seconds : float
    timings : dict
        Seconds of each stage: ``prepare_data`` (split, normalizer, slice store),
        ``build_model``, ``train_steps`` (the epochs' batches), ``validation``.
    """

    model: object
    history: pd.DataFrame
    best_epoch: int
    best_val_dice: float
    stopped_by_budget: bool
    train_patients: list[str]
    val_patients: list[str]
    normalizer: object
    store: object
    config: TrainConfig
    seconds: float
    speedups: dict = field(default_factory=dict)
    bundle_path: Path | None = None
    timings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Numbers for ``metrics.json``."""
        h = self.history
        val = self.store.indices_for(self.val_patients)
        return {
            "best_epoch": self.best_epoch,
            "best_val_dice": self.best_val_dice,
            "epochs_run": int(len(h)),
            "final_train_loss": float(h.train_loss.iloc[-1]) if len(h) else math.nan,
            "stopped_by_budget": self.stopped_by_budget,
            "train_patients": len(self.train_patients),
            "val_patients": len(self.val_patients),
            "train_slices": int(self.store.indices_for(self.train_patients).size),
            "val_slices": int(val.size),
            "val_slices_scored": int(validation_subset(val, self.config.max_val_slices).size),
            "seconds": self.seconds,
            **{f"seconds_{k}": v for k, v in self.timings.items()},
            **self.speedups,
        }


def build_normalizer(scans: Sequence[Scan], config: TrainConfig, *, progress: bool = False):
    """The normalizer of a training run.

    Quantile normalization maps onto a reference built from ``scans``' volumes (the
    training split), or onto the template scan's distribution when
    ``config.normalization_reference`` is ``"template"``.
    """
    if config.normalization.lower() != "quantile":
        return get_normalizer(config.normalization)
    if config.normalization_reference == "template":
        reference = build_template_reference(
            config.template, config.template_brain_mask, n_quantiles=config.n_quantiles
        )
        return get_normalizer("quantile", reference)

    def pairs():
        for s in tqdm(scans, desc="quantile reference", disable=not progress):
            flair, brain = load_flair(s)
            yield flair.data, brain

    return get_normalizer("quantile", build_reference(pairs(), n_quantiles=config.n_quantiles))


def _batches(indices: np.ndarray, batch_size: int):
    for i in range(0, len(indices), batch_size):
        yield indices[i : i + batch_size]


def _load_batch(store, idx: np.ndarray, device: str, channels_last: bool):
    import torch

    order = np.sort(idx)  # memmap-friendly; the batch's order does not matter to the loss
    x = torch.from_numpy(np.ascontiguousarray(store.images[order]))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(store.masks[order]).astype(np.float32))[:, None]
    x, y = x.to(device), y.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def evaluate_slices(
    model,
    store,
    indices: np.ndarray,
    *,
    config: TrainConfig,
    device: str,
    channels_last: bool,
    autocast: str,
) -> dict[str, float]:
    """Validation scores of ``model`` on store rows ``indices``.

    Returns
    -------
    dict
        ``loss`` (mean weighted BCE per slice), ``pooled_dice`` (``2 sum|P & T| / (sum|P| +
        sum|T|)`` over all slices) and ``mean_slice_dice`` (the mean of per-slice Dice, a
        slice with empty truth and prediction scoring 1); NaN without slices (pooled Dice
        also NaN when every slice is empty).
    """
    import torch

    if len(indices) == 0:
        return {"loss": math.nan, "pooled_dice": math.nan, "mean_slice_dice": math.nan}
    model.eval()
    inter = total = 0.0
    loss_sum = 0.0
    slice_dice_sum = 0.0
    with torch.no_grad():
        for b in _batches(indices, max(config.batch_size, 32)):
            x, y = _load_batch(store, b, device, channels_last)
            with autocast_context(device, autocast):
                logits = model(x)
            loss_sum += float(
                weighted_bce_with_logits(logits, y, pos_weight=config.pos_weight)
            ) * len(b)
            pred = (torch.sigmoid(logits.float()) >= config.threshold).float()
            inter += float((pred * y).sum())
            total += float(pred.sum() + y.sum())
            s_inter = (pred * y).sum(dim=(1, 2, 3))
            s_total = (pred + y).sum(dim=(1, 2, 3))
            per_slice = torch.where(s_total > 0, 2 * s_inter / s_total.clamp(min=1), 1.0)
            slice_dice_sum += float(per_slice.sum())
    return {
        "loss": loss_sum / len(indices),
        "pooled_dice": 2 * inter / total if total > 0 else math.nan,
        "mean_slice_dice": slice_dice_sum / len(indices),
    }


@dataclass
class _Data:
    """The slices of a training run, split by patient."""

    store: object
    normalizer: object
    train_patients: list[str]
    val_patients: list[str]
    train_idx: np.ndarray
    val_idx: np.ndarray


def _prepare_data(scans: list[Scan], config: TrainConfig, cache_dir) -> _Data:
    """Split patients, build the normalizer from the training split, slice every scan."""
    patients = sorted({s.patient_key for s in scans})
    train_p, val_p = split_by_patient(patients, val_fraction=config.val_fraction, seed=config.seed)
    train_scans = [s for s in scans if s.patient_key in set(train_p)]
    normalizer = build_normalizer(train_scans, config, progress=config.progress)
    store = build_slice_store(
        scans,
        label=config.label,
        size=config.size,
        normalizer=normalizer,
        cache_dir=cache_dir,
        min_brain_fraction=config.min_brain_fraction,
        crop=config.slice_crop,
        progress=config.progress,
    )
    train_idx = store.indices_for(train_p)
    if train_idx.size == 0:
        raise ValueError("no training slices (empty brain masks?)")
    val_idx = validation_subset(store.indices_for(val_p), config.max_val_slices)
    return _Data(store, normalizer, list(train_p), list(val_p), train_idx, val_idx)


def validation_subset(indices: np.ndarray, limit: int | None) -> np.ndarray:
    """At most ``limit`` of the validation slices ``indices``, evenly spaced (all when None).

    The store lists slices by patient, scan and axial position, so the subset spans every
    validation patient and the brain's height; it does not depend on the epoch or the seed.
    """
    if not limit or indices.size <= limit:
        return indices
    return indices[np.linspace(0, indices.size - 1, int(limit)).round().astype(int)]


@dataclass
class _Run:
    """What one epoch needs besides the data: the model, its optimizer and the device."""

    model: object
    optimizer: object
    config: TrainConfig
    device: str
    channels_last: bool
    autocast: str
    deadline: float | None  # perf_counter() value past which training stops (time budget)
    scheduler: object = None  # torch.optim.lr_scheduler.StepLR, or None: constant lr
    steps: int = 0  # optimizer steps taken (for the learning-rate warm-up)


def _train_epoch(run: _Run, store, order: np.ndarray, epoch: int) -> tuple[float, int, bool]:
    """One pass over ``order``; returns (mean loss, slices seen, stopped by the budget)."""
    cfg = run.config
    run.model.train()
    loss_sum, seen = 0.0, 0
    bar = tqdm(
        list(_batches(order, cfg.batch_size)),
        desc=f"epoch {epoch}/{cfg.epochs}",
        disable=not cfg.progress,
        leave=False,
    )
    stopped = False
    scheduled = run.optimizer.param_groups[0]["lr"]  # this epoch's rate, warm-up aside
    for b in bar:
        _warm_up(run, scheduled)
        x, y = _load_batch(store, b, run.device, run.channels_last)
        with autocast_context(run.device, run.autocast):
            logits = run.model(x)
        loss = weighted_bce_with_logits(logits, y, pos_weight=cfg.pos_weight)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.steps += 1
        loss_sum += float(loss.detach()) * len(b)
        seen += len(b)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        if run.deadline is not None and time.perf_counter() >= run.deadline:
            stopped = True
            break
    bar.close()
    for group in run.optimizer.param_groups:  # the scheduler steps from the epoch's rate
        group["lr"] = scheduled
    return loss_sum / max(seen, 1), seen, stopped


def _warm_up(run: _Run, scheduled: float) -> None:
    """Set the rate of the next step: ``scheduled`` scaled by the linear warm-up, if any."""
    warmup = run.config.lr_warmup_steps
    if run.steps < warmup:  # its last step is at ``scheduled``, where the rate then stays
        for group in run.optimizer.param_groups:
            group["lr"] = scheduled * (run.steps + 1) / warmup


def epoch_order(data: _Data, config: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """The training slices of one epoch, in order (store row indices).

    A permutation of the training slices, cut to ``config.max_slices_per_epoch``; with
    ``config.foreground_fraction`` > 0, that share of the epoch comes from slices with lesion
    (with replacement only when there are fewer of them) and the rest uniformly from all
    training slices.
    """
    n = min(config.max_slices_per_epoch or data.train_idx.size, data.train_idx.size)
    if not config.foreground_fraction:
        return rng.permutation(data.train_idx)[:n]
    lesion = data.store.manifest["lesion_voxels"].to_numpy()[data.train_idx] > 0
    foreground = data.train_idx[lesion]
    k = round(config.foreground_fraction * n) if foreground.size else 0
    drawn = rng.choice(foreground, size=k, replace=k > foreground.size) if k else foreground[:0]
    rest = rng.permutation(data.train_idx)[: n - k]
    return rng.permutation(np.concatenate([drawn, rest]))


def _is_better(best: dict, val_dice: float, val_loss: float) -> bool:
    """Best validation Dice wins; on a tie, the lower (or equal) validation loss."""
    score = -math.inf if math.isnan(val_dice) else val_dice
    tie_better = score == best["dice"] and (math.isnan(val_loss) or val_loss <= best["loss"])
    return best["state"] is None or score > best["dice"] or tie_better


def _fit(run: _Run, data: _Data, rng: np.random.Generator) -> tuple[list[dict], dict, bool]:
    """The epochs: returns (history rows, best checkpoint, stopped by the budget)."""
    cfg = run.config
    history: list[dict] = []
    best = {"dice": -math.inf, "loss": math.inf, "epoch": 0, "state": None}
    stopped = False
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        order = epoch_order(data, cfg, rng)
        lr = run.optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
        train_loss, seen, stopped = _train_epoch(run, data.store, order, epoch)
        if run.scheduler is not None:
            run.scheduler.step()
        t_val = time.perf_counter()
        scores = evaluate_slices(
            run.model,
            data.store,
            data.val_idx,
            config=cfg,
            device=run.device,
            channels_last=run.channels_last,
            autocast=run.autocast,
        )
        val_loss, val_dice = scores["loss"], scores[cfg.selection_metric]
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_dice": scores["pooled_dice"],
                "val_mean_slice_dice": scores["mean_slice_dice"],
                "lr": lr,
                "slices": seen,
                "seconds": time.perf_counter() - t0,
                "val_seconds": time.perf_counter() - t_val,
                "partial": stopped and seen < len(order),
            }
        )
        if cfg.progress:
            print(
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val Dice {scores['pooled_dice']:.4f} (mean per slice "
                f"{scores['mean_slice_dice']:.4f})"
            )
        if _is_better(best, val_dice, val_loss):
            state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
            best.update(
                dice=-math.inf if math.isnan(val_dice) else val_dice,
                loss=math.inf if math.isnan(val_loss) else val_loss,
                epoch=epoch,
                state=copy.deepcopy(state),
            )
        if stopped:
            break
    return history, best, stopped


def _make_run(config: TrainConfig, device: str, channels_last: bool, autocast: str) -> _Run:
    """The model (seeded by the caller), its Adam optimizer, learning-rate steps, budget."""
    import torch

    model = build_model(config.architecture, config.encoder, encoder_weights=config.encoder_weights)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    run = _Run(model, opt, config, device, channels_last, autocast, None)
    if config.lr_step_epochs:
        run.scheduler = torch.optim.lr_scheduler.StepLR(
            opt, step_size=config.lr_step_epochs, gamma=config.lr_gamma
        )
    if config.time_budget_s is not None:
        run.deadline = time.perf_counter() + config.time_budget_s
    return run


def _stage_timings(start: float, t_data: float, t_model: float, epochs: pd.DataFrame) -> dict:
    """:attr:`TrainResult.timings` from the stages' ``perf_counter()`` marks, up to now."""
    validation = float(epochs["val_seconds"].sum()) if len(epochs) else 0.0
    return {
        "prepare_data": t_data - start,
        "build_model": t_model - t_data,
        "train_steps": time.perf_counter() - t_model - validation,
        "validation": validation,
    }


def train_model(
    scans: Sequence[Scan],
    config: TrainConfig | None = None,
    *,
    bundle_path: str | os.PathLike | None = None,
    model_id: str | None = None,
    train_datasets: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **overrides,
) -> TrainResult:
    """Train a model on ``scans`` and (optionally) write its bundle.

    Parameters
    ----------
    scans : sequence of Scan
        Training data (all datasets combined); split by patient into train/validation.
    config : TrainConfig, optional
        Default: ``TrainConfig()``; ``overrides`` replace its fields.
    bundle_path : path, optional
        Write the model bundle there (atomically).
    model_id : str, optional
        Stored in the bundle (default: the bundle folder's name).
    train_datasets : sequence of str, optional
        Dataset names stored in the bundle (default: the scans' ``dataset`` values).
    cache_dir : path, optional
        Slice-store cache (default :func:`msnb.paths.cache_root`).

    Returns
    -------
    TrainResult
    """
    import torch

    config = TrainConfig.from_dict({**(config or TrainConfig()).to_dict(), **overrides})
    scans = list(scans)
    if not scans:
        raise ValueError("no training scans")
    start = time.perf_counter()
    device = pick_device(config.device)
    if device == "cpu" and config.num_threads:
        # Otherwise torch's default: OMP_NUM_THREADS when set (a study's parallel workers
        # set it to their share of the cores), else the cores.
        torch.set_num_threads(config.num_threads)
    channels_last, autocast = resolve_speedups(
        device, channels_last=config.channels_last, autocast=config.autocast
    )
    seed_everything(config.seed)
    data = _prepare_data(scans, config, cache_dir)
    t_data = time.perf_counter()
    seed_everything(config.seed)
    run = _make_run(config, device, channels_last, autocast)
    t_model = time.perf_counter()
    history, best, stopped = _fit(run, data, np.random.default_rng(config.seed))
    epochs = pd.DataFrame(history)
    timings = _stage_timings(start, t_data, t_model, epochs)
    model = run.model.to("cpu").to(memory_format=torch.contiguous_format)
    model.load_state_dict(best["state"])
    model.eval()
    result = TrainResult(
        model=model,
        history=epochs,
        best_epoch=int(best["epoch"]),
        best_val_dice=float(best["dice"]) if best["dice"] != -math.inf else math.nan,
        stopped_by_budget=stopped,
        train_patients=data.train_patients,
        val_patients=data.val_patients,
        normalizer=data.normalizer,
        store=data.store,
        config=config,
        seconds=time.perf_counter() - start,
        speedups={"device": device, "channels_last": channels_last, "autocast": autocast},
        timings=timings,
    )
    if bundle_path is not None:
        result.bundle_path = write_bundle(
            result, bundle_path, scans=scans, model_id=model_id, train_datasets=train_datasets
        )
    return result


def write_bundle(
    result: TrainResult,
    path: str | os.PathLike,
    *,
    scans: Sequence[Scan],
    model_id: str | None = None,
    train_datasets: Sequence[str] | None = None,
) -> Path:
    """Write the bundle of a training result (see :mod:`msnb.bundle`)."""
    path = Path(path)
    cfg = result.config
    datasets = list(train_datasets) if train_datasets else sorted({s.dataset for s in scans})
    meta = {
        "model_id": model_id or path.name,
        "train_datasets": datasets,
        "label": cfg.label,
        "min_brain_fraction": cfg.min_brain_fraction,
        "slice_crop": cfg.slice_crop,
        "initial_weights": describe_weights(cfg.encoder_weights, cfg.encoder),
        "config": cfg.to_dict(),
        "train_scans": [s.scan_id for s in scans],
        "train_patients": result.train_patients,
        "val_patients": result.val_patients,
        "training": result.summary(),
        "history": result.history.to_dict(orient="records"),
    }
    return save_bundle(
        path,
        result.model,
        architecture=cfg.architecture,
        encoder=cfg.encoder,
        size=cfg.size,
        normalizer=result.normalizer,
        meta=meta,
        threshold=cfg.threshold,
        calibration=result.store.sample_planes(result.train_patients, CALIBRATION_PLANES),
    )


def data_summary(store, train_patients: Sequence[str], val_patients: Sequence[str]) -> pd.DataFrame:
    """Per dataset and center: scans, patients, slices, lesion slices, per split."""
    m = store.manifest.copy()
    split = np.where(m.patient_key.isin(list(val_patients)), "val", "train")
    m["split"] = split
    g = m.groupby(["split", "dataset", "center"])
    return pd.DataFrame(
        {
            "patients": g.patient_key.nunique(),
            "scans": g.scan_id.nunique(),
            "slices": g.size(),
            "lesion_slices": g.lesion_voxels.apply(lambda s: int((s > 0).sum())),
        }
    ).reset_index()


def validation_examples(result: TrainResult, *, n: int = 4, batch_size: int = 16):
    """The ``n`` validation slices with the most lesion, with the model's predictions.

    Returns
    -------
    images, truths, preds : np.ndarray, shape (n, S, S)
        Model-plane slices (float32, bool, bool); empty arrays without validation data.
    """
    store = result.store
    idx = store.indices_for(result.val_patients)
    if idx.size == 0:
        idx = store.indices_for(result.train_patients)
    load = store.manifest.lesion_voxels.to_numpy()[idx]
    pick = np.sort(idx[lesion_slices(load, n=n, axis=0)])
    images = np.asarray(store.images[pick])
    truths = np.asarray(store.masks[pick]).astype(bool)
    probs = infer_slices(result.model, np.moveaxis(images, 0, 2), batch_size=batch_size)
    preds = np.moveaxis(probs, 2, 0) >= result.config.threshold
    return images, truths, preds


def ensure_demo_bundle(
    *, phantom: str = "tiny", seed: int = 0, normalization: str = "quantile", progress: bool = False
) -> Path:
    """A tiny model bundle trained on the phantom's MSSEG-like training set (cached).

    Lets notebooks that need a model run with their defaults. Trained once (32 px, one
    short epoch, a few seconds on a CPU) into ``<outputs>/cache/demo-bundle-<phantom>-<seed>``
    (``...-<seed>-<normalization>`` for another normalization than quantile, e.g. the
    tour's linear twin, trained the same way).
    """
    suffix = "" if normalization == "quantile" else f"-{normalization}"
    path = cache_root() / f"demo-bundle-{phantom}-{seed}{suffix}"
    if (path / "bundle.json").exists():
        return path
    specs = resolve_datasets(["msseg2016_train"], phantom=phantom, seed=seed, progress=progress)
    cfg = TrainConfig(
        size=32,
        epochs=1,
        batch_size=8,
        max_slices_per_epoch=32,
        seed=seed,
        normalization=normalization,
        progress=progress,
    )
    train_model(
        load_datasets(specs),
        cfg,
        bundle_path=path,
        model_id=path.name,
        train_datasets=["msseg2016_train"],
    )
    return path
