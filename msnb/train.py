"""Training a 2D slice segmentation model with the paper's recipe, into a model bundle.

Recipe (Badea & Popa 2024), every value a :class:`TrainConfig` field: smp UNet++ with a
resnet18 encoder on axial FLAIR slices after quantile normalization; weighted binary
cross-entropy on sigmoid outputs with lesion weight 0.8; Adam (lr 1e-3, weight decay 1e-6,
betas 0.9/0.999); 50 epochs; an 80/20 split *by patient*; the checkpoint with the best
validation Dice is kept; threshold 0.5.

Validation Dice is pooled over all validation slices (in the model plane):
``2 sum|P & T| / (sum|P| + sum|T|)``. Ties keep the later epoch when its validation loss is
lower.

On the CPU, training uses all cores and bfloat16 autocast when the processor supports bf16 (``"auto"``); the loss is always computed in float32.
The same seed on the CPU gives the same weights (same thread count, same library versions).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from msnb.datasets import Scan, load_scans
from msnb.study import DATASET_ADAPTERS

# dataset name -> (adapter, sub-folder of a phantom or data root): one table, in msnb.study
DATASET_LAYOUT = DATASET_ADAPTERS


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the paper's recipe).

    Attributes
    ----------
    architecture : str, default "unetplusplus"
        ``"unetplusplus"`` or ``"unet"``.
    encoder : str, default "resnet18"
    encoder_weights : str or None, default None
        None, ``"imagenet"`` (local cache) or a weights file (see :func:`msnb.models.build_model`).
    size : int, default 224
        Side S of the slices (a multiple of 32).
    epochs : int, default 50
    batch_size : int, default 16
    lr, weight_decay : float, default 1e-3, 1e-6
    betas : (float, float), default (0.9, 0.999)
    pos_weight : float, default 0.8
        Weight ``w`` of lesion pixels in the loss.
    threshold : float, default 0.5
    normalization : str, default "quantile"
        ``"quantile"``, ``"linear"`` or ``"zscore"``.
    n_quantiles : int, default 1024
        Size of the quantile reference, built from the training-split volumes.
    label : str, default "consensus"
    val_fraction : float, default 0.2
        Share of *patients* held out for validation.
    seed : int, default 0
    device : str, default "auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cuda"``, ``"mps"``, ``"cpu"``.
    channels_last : "auto" or bool, default "auto"
        ``"auto"``: on for CUDA (no measurable gain on the CPU).
    autocast : str, default "auto"
        ``"auto"``, ``"bf16"``, ``"fp16"`` (CUDA) or ``"none"``. ``"auto"``: bf16 on a CPU with
        bf16 support and on CUDA devices that support it; otherwise none.
    num_threads : int or None, default None
        CPU threads (None: ``OMP_NUM_THREADS`` when set, else all cores).
    time_budget_s : float or None, default None
        Stop training (cleanly, after the current batch, then validate) when exceeded.
    max_slices_per_epoch : int or None, default None
        Random subset of training slices per epoch (for quick runs).
    min_brain_fraction : float, default 0.05
        Slices kept (see :func:`msnb.slices.brain_slices`).
    progress : bool, default True
        tqdm progress bar per epoch.
    """

    architecture: str = "unetplusplus"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    size: int = 224
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    pos_weight: float = 0.8
    threshold: float = 0.5
    normalization: str = "quantile"
    n_quantiles: int = 1024
    label: str = "consensus"
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    channels_last: str | bool = "auto"
    autocast: str = "auto"
    num_threads: int | None = None
    time_budget_s: float | None = None
    max_slices_per_epoch: int | None = None
    min_brain_fraction: float = 0.05
    progress: bool = True

    def __post_init__(self) -> None:
        from msnb.models import canonical_architecture

        self.architecture = canonical_architecture(self.architecture)
        self.betas = tuple(float(b) for b in self.betas)
        if self.size % 32:
            raise ValueError(f"size must be a multiple of 32 (encoder depth 5), got {self.size}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.autocast not in ("auto", "bf16", "fp16", "none"):
            raise ValueError(f"autocast must be auto, bf16, fp16 or none, got {self.autocast!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict, ignoring keys that are not fields (e.g. study bookkeeping)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_parameters(cls, params: dict) -> TrainConfig:
        """Build from a notebook's parameters (e.g. ``globals()``).

        Unknown names are ignored; for the optional settings (``encoder_weights``,
        ``time_budget_s``, ``max_slices_per_epoch``, ``num_threads``) an empty string or 0
        means None, so that notebook parameters can keep a type-evident literal.
        """
        optional = {"encoder_weights", "time_budget_s", "max_slices_per_epoch", "num_threads"}
        values = {
            k: (None if k in optional and v in ("", 0, 0.0) else v)
            for k, v in params.items()
            if k in {f.name for f in fields(cls)}
        }
        return cls(**values)


# --------------------------------------------------------------------------- datasets


def resolve_datasets(
    names: Sequence[str],
    data_root: str | os.PathLike | None = None,
    *,
    specs: dict | None = None,
    phantom: str = "tiny",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict]:
    """Where each named dataset lives: ``{name: {"adapter", "root", "options"}}``.

    Parameters
    ----------
    names : sequence of str
        ``isbi2015``, ``msseg2016_train``, ``msseg2016_test``, ``3dmrms`` (or any name given
        in ``specs``).
    data_root : path, optional
        Folder holding ``isbi2015/``, ``msseg2016/``, ``3dmrms/`` (the real datasets or a
        generated phantom). Default: the phantom of preset ``phantom`` under
        ``<outputs>/phantom/<preset>-seed<seed>``, generated on first use.
    specs : dict, optional
        Explicit ``{name: {"adapter", "root", "options"}}`` entries; they win.
    """
    specs = dict(specs or {})
    out = {}
    root = None if data_root in (None, "") else Path(data_root).expanduser()
    for name in names:
        if name in specs:
            spec = dict(specs[name])
            spec.setdefault("options", {})
            out[name] = spec
            continue
        if name not in DATASET_LAYOUT:
            raise ValueError(
                f"unknown dataset {name!r}: give its adapter and root in specs "
                f"(known names: {', '.join(DATASET_LAYOUT)})"
            )
        adapter, sub = DATASET_LAYOUT[name]
        if root is None:
            from msnb.paths import outputs_root

            root = outputs_root() / "phantom" / f"{phantom}-seed{seed}"
            if not (root / "phantom.json").exists():
                from msnb.phantom import generate_phantom

                generate_phantom(root, preset=phantom, seed=seed, progress=progress)
        out[name] = {"adapter": adapter, "root": str(root / sub), "options": {}}
    return out


def load_datasets(specs: dict[str, dict]) -> list[Scan]:
    """All scans of the resolved datasets (see :func:`resolve_datasets`), in order."""
    scans: list[Scan] = []
    for spec in specs.values():
        scans.extend(load_scans(spec["adapter"], spec["root"], **(spec.get("options") or {})))
    return scans


# --------------------------------------------------------------------------- devices


def pick_device(name: str = "auto") -> str:
    """``"cuda"``, ``"mps"`` or ``"cpu"`` for ``name`` (``"auto"``: the best available)."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_speedups(config: TrainConfig, device: str) -> tuple[bool, str]:
    """``(channels_last, autocast)`` actually used on ``device`` for ``config``'s ``"auto"``."""
    import torch

    kind = device.split(":")[0]
    cl = config.channels_last
    if cl == "auto":
        # Measured on a 2-core AVX-512 CPU: channels_last alone gave no gain there (bf16
        # autocast gave 1.6-1.7x); it is the usual win on CUDA.
        cl = kind == "cuda"
    ac = config.autocast
    if ac == "auto":
        if kind == "cpu":
            ac = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "none"
        elif kind == "cuda":
            ac = "bf16" if torch.cuda.is_bf16_supported() else "none"
        else:
            ac = "none"
    return bool(cl), ac


def _autocast(device: str, mode: str):
    import contextlib

    import torch

    if mode == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- loop


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The best-validation-Dice model (eval mode, CPU).
    history : pandas.DataFrame
        One row per epoch: epoch, train_loss, val_loss, val_dice, slices, seconds,
        partial (epoch cut by the time budget).
    best_epoch : int
    best_val_dice : float
    stopped_by_budget : bool
    train_patients, val_patients : list of str
    normalizer : Normalizer
    store : SliceStore
    bundle_path : Path or None
    config : TrainConfig
    seconds : float
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

    def summary(self) -> dict:
        """Numbers for ``metrics.json``."""
        h = self.history
        return {
            "best_epoch": self.best_epoch,
            "best_val_dice": self.best_val_dice,
            "epochs_run": int(len(h)),
            "final_train_loss": float(h.train_loss.iloc[-1]) if len(h) else math.nan,
            "stopped_by_budget": self.stopped_by_budget,
            "train_patients": len(self.train_patients),
            "val_patients": len(self.val_patients),
            "train_slices": int(self.store.indices_for(self.train_patients).size),
            "val_slices": int(self.store.indices_for(self.val_patients).size),
            "seconds": self.seconds,
            **self.speedups,
        }


def build_normalizer(scans: Sequence[Scan], config: TrainConfig, *, progress: bool = False):
    """The normalizer of a training run; a quantile reference from ``scans``' volumes."""
    from msnb.normalize import build_reference, get_normalizer

    if config.normalization.lower() != "quantile":
        return get_normalizer(config.normalization)
    from tqdm.auto import tqdm

    from msnb.io import load_image
    from msnb.preprocess import load_brain

    def pairs():
        for s in tqdm(scans, desc="quantile reference", disable=not progress):
            flair = load_image(s.flair)
            yield flair.data, load_brain(s, flair)

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
) -> tuple[float, float]:
    """Mean loss and pooled Dice of ``model`` on store rows ``indices``."""
    import torch

    from msnb.models import weighted_bce_with_logits

    if len(indices) == 0:
        return math.nan, math.nan
    model.eval()
    inter = total = 0.0
    loss_sum = 0.0
    with torch.no_grad():
        for b in _batches(indices, max(config.batch_size, 32)):
            x, y = _load_batch(store, b, device, channels_last)
            with _autocast(device, autocast):
                logits = model(x)
            loss_sum += float(
                weighted_bce_with_logits(logits, y, pos_weight=config.pos_weight)
            ) * len(b)
            pred = (torch.sigmoid(logits.float()) >= config.threshold).float()
            inter += float((pred * y).sum())
            total += float(pred.sum() + y.sum())
    dice = 2 * inter / total if total > 0 else math.nan
    return loss_sum / len(indices), dice


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
    from tqdm.auto import tqdm

    from msnb.models import build_model, weighted_bce_with_logits
    from msnb.slices import build_slice_store, split_by_patient

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
    channels_last, autocast = resolve_speedups(config, device)
    seed_everything(config.seed)

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
        progress=config.progress,
    )
    train_idx = store.indices_for(train_p)
    val_idx = store.indices_for(val_p)
    if train_idx.size == 0:
        raise ValueError("no training slices (empty brain masks?)")

    seed_everything(config.seed)
    model = build_model(config.architecture, config.encoder, encoder_weights=config.encoder_weights)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    rng = np.random.default_rng(config.seed)
    history: list[dict] = []
    best = {"dice": -math.inf, "loss": math.inf, "epoch": 0, "state": None}
    stopped = False
    loop_start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(train_idx)
        if config.max_slices_per_epoch:
            order = order[: config.max_slices_per_epoch]
        model.train()
        loss_sum, seen = 0.0, 0
        bar = tqdm(
            list(_batches(order, config.batch_size)),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        )
        for b in bar:
            x, y = _load_batch(store, b, device, channels_last)
            with _autocast(device, autocast):
                logits = model(x)
            loss = weighted_bce_with_logits(logits, y, pos_weight=config.pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(b)
            seen += len(b)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            if (
                config.time_budget_s is not None
                and time.perf_counter() - loop_start >= config.time_budget_s
            ):
                stopped = True
                break
        bar.close()
        val_loss, val_dice = evaluate_slices(
            model,
            store,
            val_idx,
            config=config,
            device=device,
            channels_last=channels_last,
            autocast=autocast,
        )
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / max(seen, 1),
                "val_loss": val_loss,
                "val_dice": val_dice,
                "slices": seen,
                "seconds": time.perf_counter() - t0,
                "partial": stopped and seen < len(order),
            }
        )
        if config.progress:
            print(
                f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}, val loss {val_loss:.4f}, "
                f"val Dice {val_dice:.4f}"
            )
        score = -math.inf if math.isnan(val_dice) else val_dice
        tie_better = score == best["dice"] and (math.isnan(val_loss) or val_loss <= best["loss"])
        if best["state"] is None or score > best["dice"] or tie_better:
            best.update(
                dice=score,
                loss=math.inf if math.isnan(val_loss) else val_loss,
                epoch=epoch,
                state=copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}),
            )
        if stopped:
            break
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    model.load_state_dict(best["state"])
    model.eval()
    hist = pd.DataFrame(history)
    result = TrainResult(
        model=model,
        history=hist,
        best_epoch=int(best["epoch"]),
        best_val_dice=float(best["dice"]) if best["dice"] != -math.inf else math.nan,
        stopped_by_budget=stopped,
        train_patients=list(train_p),
        val_patients=list(val_p),
        normalizer=normalizer,
        store=store,
        config=config,
        seconds=time.perf_counter() - start,
        speedups={"device": device, "channels_last": channels_last, "autocast": autocast},
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
    from msnb.bundle import save_bundle

    path = Path(path)
    cfg = result.config
    datasets = list(train_datasets) if train_datasets else sorted({s.dataset for s in scans})
    meta = {
        "model_id": model_id or path.name,
        "train_datasets": datasets,
        "label": cfg.label,
        "min_brain_fraction": cfg.min_brain_fraction,
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
    from msnb.predict import infer_slices

    store = result.store
    idx = store.indices_for(result.val_patients)
    if idx.size == 0:
        idx = store.indices_for(result.train_patients)
    load = store.manifest.lesion_voxels.to_numpy()[idx]
    pick = np.sort(idx[np.argsort(-load, kind="stable")[:n]])
    images = np.asarray(store.images[pick])
    truths = np.asarray(store.masks[pick]).astype(bool)
    probs = infer_slices(result.model, np.moveaxis(images, 0, 2), batch_size=batch_size)
    preds = np.moveaxis(probs, 2, 0) >= result.config.threshold
    return images, truths, preds


def ensure_demo_bundle(*, phantom: str = "tiny", seed: int = 0, progress: bool = False) -> Path:
    """A tiny model bundle trained on the phantom's MSSEG-like training set (cached).

    Lets notebooks that need a model run with their defaults. Trained once (32 px, one
    short epoch, a few seconds on a CPU) into ``<outputs>/cache/demo-bundle-<phantom>-<seed>``.
    """
    from msnb.paths import cache_root

    path = cache_root() / f"demo-bundle-{phantom}-{seed}"
    if (path / "bundle.json").exists():
        return path
    specs = resolve_datasets(["msseg2016_train"], phantom=phantom, seed=seed, progress=progress)
    cfg = TrainConfig(
        size=32, epochs=1, batch_size=8, max_slices_per_epoch=32, seed=seed, progress=progress
    )
    train_model(
        load_datasets(specs),
        cfg,
        bundle_path=path,
        model_id=path.name,
        train_datasets=["msseg2016_train"],
    )
    return path
