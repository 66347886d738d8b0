"""The paper's training recipe: every setting of a training run, its default, and its name.

Recipe (Badea & Popa 2024), every value a :class:`TrainConfig` field: smp UNet++ with a
resnet18 encoder on axial FLAIR slices after quantile normalization; weighted binary
cross-entropy on sigmoid outputs with lesion weight 0.8; Adam (lr 1e-3, weight decay 1e-6,
betas 0.9/0.999); 50 epochs; an 80/20 split *by patient*; the checkpoint with the best
validation Dice is kept; threshold 0.5.

This module is the one home of the training defaults: :mod:`msnb.train` runs them, study
files (:mod:`msnb.study`) override them, and the statistics (:mod:`msnb.stats`) call a
result "default" when it used them. It is also the one home of the values each setting
accepts (:data:`CHOICES`, :data:`RANGES`, :func:`setting_problem`): :class:`TrainConfig`
refuses the others, and so does a study file when it is loaded. It imports no
deep-learning library.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from msnb.datasets import LABELS
from msnb.device import AUTOCAST_MODES
from msnb.normalize import NORMALIZATIONS

__all__ = [
    "ARCHITECTURES",
    "CHOICES",
    "DEVICES",
    "RANGES",
    "REFERENCES",
    "SELECTION_METRICS",
    "SLICE_CROPS",
    "Range",
    "TrainConfig",
    "canonical_architecture",
    "model_id_for",
    "precision_of",
    "setting_problem",
]

SLICE_CROPS = ("brain", "none")  # msnb.slices.compute_geometry
SELECTION_METRICS = ("pooled_dice", "mean_slice_dice")
REFERENCES = ("training", "template")
ARCHITECTURES = {"unetplusplus": "UnetPlusPlus", "unet": "Unet"}
_ALIASES = {"unet++": "unetplusplus", "unetpp": "unetplusplus", "unetplusplus": "unetplusplus"}
#: Devices a training may name (:func:`msnb.device.pick_device`), and ``cuda:<index>``.
DEVICES = ("auto", "cpu", "cuda", "mps")
#: The settings of :class:`TrainConfig` that take one of a few values. ``architecture`` also
#: takes its aliases (:func:`canonical_architecture`); ``label`` and ``device`` also take the
#: forms of :data:`_PATTERNS` (``rater<k>``, ``cuda:<index>``).
CHOICES: dict[str, tuple[str, ...]] = {
    "architecture": tuple(ARCHITECTURES),
    "normalization": NORMALIZATIONS,
    "label": LABELS,
    "device": DEVICES,
    "autocast": AUTOCAST_MODES,
    "slice_crop": SLICE_CROPS,
    "selection_metric": SELECTION_METRICS,
    "normalization_reference": REFERENCES,
}
_PATTERNS = {"label": ("rater<k>", r"rater[1-9][0-9]*"), "device": ("cuda:<index>", r"cuda:[0-9]+")}
#: smp encoder names (``resnet18``, ``efficientnet-b0``, ``tu-convnext_tiny``): the model id
#: shows them as they are, so two encoders never share an id.
_ENCODER = r"[a-z0-9][a-z0-9_.-]*"


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: ``low``..``high`` (None: unbounded).

    ``open_low`` / ``open_high`` exclude the bound; ``multiple_of`` asks for multiples;
    ``what`` names the quantity in messages (``"a share in [0, 1]"``), ``why`` explains it.
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    multiple_of: int = 0
    what: str = "a value"
    why: str = ""

    def __contains__(self, value) -> bool:
        low, high = self.low, self.high
        if self.multiple_of and value % self.multiple_of:
            return False
        if low is not None and (value <= low if self.open_low else value < low):
            return False
        return high is None or (value < high if self.open_high else value <= high)

    def __str__(self) -> str:
        why = f" ({self.why})" if self.why else ""
        if self.multiple_of:
            return f"a positive multiple of {self.multiple_of}{why}"
        if self.high is None:
            bound = f"more than {self.low}" if self.open_low else f"at least {self.low}"
            return bound + why
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"{self.what} in {left}{self.low}, {self.high}{right}{why}"


#: The numeric settings of :class:`TrainConfig` and the values each accepts (a None value,
#: where the field allows it, is always accepted). ``size`` is a multiple of 32: the
#: encoders have depth 5 and UNet++/UNet's decoder halves and doubles the slice 5 times.
RANGES: dict[str, Range] = {
    "size": Range(32, multiple_of=32, why="UNet++ and UNet halve the slice 5 times"),
    "epochs": Range(1),
    "batch_size": Range(1),
    "lr": Range(0, open_low=True),
    "weight_decay": Range(0),
    "pos_weight": Range(0, 1, open_low=True, open_high=True, what="a weight"),
    "threshold": Range(0, 1, open_low=True, open_high=True, what="a probability"),
    "n_quantiles": Range(2),
    "val_fraction": Range(0, 1, open_low=True, open_high=True, what="a fraction"),
    "seed": Range(0, 2**32 - 1, what="a seed", why="numpy's seeds"),
    "num_threads": Range(1),
    "time_budget_s": Range(0),
    "max_slices_per_epoch": Range(1),
    "max_val_slices": Range(1),
    "min_brain_fraction": Range(0, 1, open_high=True, what="a fraction"),
    "foreground_fraction": Range(0, 1, what="a share"),
    "lr_step_epochs": Range(1),
    "lr_gamma": Range(0, 1, open_low=True, what="a factor"),
    "lr_warmup_steps": Range(0),
}


def setting_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for the :class:`TrainConfig` setting ``name``, or None.

    Checks the choices of :data:`CHOICES` (and their patterns), the ranges of :data:`RANGES`
    and the encoder name's form; not the types (a study checks them from the annotations).
    A setting with no rule, and None, have nothing wrong.

    Returns
    -------
    str or None
        ``"expected ..., got ..."``.
    """
    if value is None:
        return None
    if name == "architecture":
        try:
            canonical_architecture(value)
        except ValueError as exc:
            return str(exc)
        return None
    if name == "encoder":
        if re.fullmatch(_ENCODER, value):
            return None
        return f"expected an smp encoder name (lower-case letters, digits, _ . -), got {value!r}"
    if name in CHOICES:
        shown, pattern = _PATTERNS.get(name, (None, None))
        if value in CHOICES[name] or (pattern and re.fullmatch(pattern, value)):
            return None
        allowed = ", ".join([*CHOICES[name], *([shown] if shown else [])])
        return f"expected one of {allowed}, got {value!r}"
    if name in RANGES and value not in RANGES[name]:
        return f"expected {RANGES[name]}, got {value!r}"
    return None


def canonical_architecture(name: str) -> str:
    """``"unetplusplus"`` or ``"unet"`` (accepts ``UNet++``, ``unetpp``, any case)."""
    key = name.lower().replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from unetplusplus, unet")
    return key


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
        Side S of the slices (a positive multiple of 32). See :data:`RANGES` and
        :data:`CHOICES` for the values every setting accepts.
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
    autocast : str, default "none"
        Precision of training (and of the bundle's predictions): ``"none"`` (float32, the
        paper), ``"bf16"``, ``"fp16"`` (CUDA) or ``"auto"``: bf16 on a CPU with bf16 support
        and on CUDA devices that support it, else float32. ``"auto"`` trains faster but its
        results depend on the machine, so a study file must declare one of the others.
    num_threads : int or None, default None
        CPU threads (None: ``OMP_NUM_THREADS`` when set, else all cores).
    time_budget_s : float or None, default None
        Stop training (cleanly, after the current batch, then validate) when exceeded.
    max_slices_per_epoch : int or None, default None
        Random subset of training slices per epoch (for quick runs).
    max_val_slices : int or None, default None
        Validate on a fixed subset of at most this many validation slices: evenly spaced
        in the slice store's order (patient, scan, then axial position), so it spans every
        validation patient and the brain's height and is the same at every epoch; None
        validates on every validation slice (the paper).
    min_brain_fraction : float, default 0.05
        Slices kept (see :func:`msnb.slices.brain_slices`); 0 keeps every slice with any
        brain voxel (the paper).
    slice_crop : {"brain", "none"}, default "brain"
        ``"brain"``: axial planes cropped to the brain's bounding box before the resize to
        S; ``"none"``: whole planes resized (the paper). See :func:`msnb.slices.compute_geometry`.
    foreground_fraction : float, default 0.0
        Share of each epoch's training slices drawn from slices with lesion (with
        replacement when there are fewer), the rest uniformly from all training slices, then
        shuffled: nnU-Net's foreground oversampling, for short runs on low lesion loads. 0
        draws every slice uniformly (the paper).
    lr_step_epochs : int or None, default None
        Multiply the learning rate by ``lr_gamma`` every ``lr_step_epochs`` epochs
        (PyTorch's ``StepLR``; the authors' code: 20); None keeps it constant.
    lr_gamma : float, default 0.5
    lr_warmup_steps : int, default 0
        Raise the learning rate linearly from ``lr / lr_warmup_steps`` to ``lr`` over the
        first optimizer steps (Goyal et al. 2017), for short runs whose first Adam steps
        would otherwise overshoot; 0: no warm-up (the paper).
    selection_metric : {"pooled_dice", "mean_slice_dice"}, default "pooled_dice"
        Validation score that picks the checkpoint: Dice pooled over all validation
        slices, or the mean of per-slice Dice (a slice with empty truth and prediction
        scores 1, as smp's epsilon-smoothed Dice of the authors' code gives).
    normalization_reference : {"training", "template"}, default "training"
        Quantile reference built from the training split's volumes, or from one
        template scan (``template``) for every model (the paper).
    template, template_brain_mask : str or None, default None
        The template FLAIR file for ``normalization_reference="template"`` and its brain
        mask (None: computed from the skull-stripped template).
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
    autocast: str = "none"
    num_threads: int | None = None
    time_budget_s: float | None = None
    max_slices_per_epoch: int | None = None
    max_val_slices: int | None = None
    min_brain_fraction: float = 0.05
    slice_crop: str = "brain"
    foreground_fraction: float = 0.0
    lr_step_epochs: int | None = None
    lr_gamma: float = 0.5
    lr_warmup_steps: int = 0
    selection_metric: str = "pooled_dice"
    normalization_reference: str = "training"
    template: str | None = None
    template_brain_mask: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.architecture = canonical_architecture(self.architecture)
        self.betas = tuple(float(b) for b in self.betas)
        for f in fields(self):
            # a label may also name a folder dataset's own mask (msnb.datasets.load_folder)
            problem = None if f.name == "label" else setting_problem(f.name, getattr(self, f.name))
            if problem:
                raise ValueError(f"{f.name}: {problem}")
        if self.normalization_reference == "template" and not self.template:
            raise ValueError("normalization_reference 'template' needs the template FLAIR file")

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
        ``time_budget_s``, ``max_slices_per_epoch``, ``max_val_slices``, ``num_threads``, ``lr_step_epochs``,
        ``template``, ``template_brain_mask``) an empty string or 0 means None, so that
        notebook parameters can keep a type-evident literal.
        """
        optional = {
            "encoder_weights",
            "time_budget_s",
            "max_slices_per_epoch",
            "max_val_slices",
            "num_threads",
            "lr_step_epochs",
            "template",
            "template_brain_mask",
        }
        values = {
            k: (None if k in optional and v in ("", 0, 0.0) else v)
            for k, v in params.items()
            if k in {f.name for f in fields(cls)}
        }
        return cls(**values)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+_.-]+", "-", str(text)).strip("-").lower()


def model_id_for(
    train_datasets: Sequence[str], settings: dict, defaults: dict | None = None
) -> str:
    """Readable, unique id of a training configuration.

    ``<datasets joined by +>__<normalization>__<architecture>-<encoder>__<label>``, followed
    by ``__<hash>`` of the other settings when they differ from ``defaults`` (e.g. an
    ablation changing the size), so two configurations never share an id, and by
    ``__seed<k>`` when the seed differs from that of ``defaults`` (a study's replicates: its
    first seed keeps the plain id).
    """
    base = "__".join(
        [
            "+".join(train_datasets),
            _slug(settings["normalization"]),
            f"{_slug(settings['architecture'])}-{_slug(settings['encoder'])}",
            _slug(settings["label"]),
        ]
    )
    shown = {"normalization", "architecture", "encoder", "label", "seed"}
    defaults = defaults or {}
    others = {
        k: v for k, v in sorted(settings.items()) if k not in shown and defaults.get(k, v) != v
    }
    if others:
        digest = hashlib.sha1(json.dumps(others, sort_keys=True).encode()).hexdigest()[:8]
        base += f"__{digest}"
    seed = settings.get("seed")
    if seed is not None and defaults.get("seed", seed) != seed:
        base += f"__seed{seed}"
    return base


def precision_of(meta: dict) -> str:
    """The precision a bundle was trained in, from its ``bundle.json`` content.

    ``"none"`` (float32), ``"bf16"`` or ``"fp16"``: the autocast the training resolved
    (``meta["training"]["autocast"]``); a bundle without that record counts as float32.
    """
    return str((meta.get("training") or {}).get("autocast") or "none")
