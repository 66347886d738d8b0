"""Model bundles: one directory holding everything inference needs.

Layout of ``<bundle>/``:

- ``weights.pt``: the network's ``state_dict`` (float32; the best-validation checkpoint);
- ``bundle.json``: architecture, encoder, slice size, threshold, normalization (name and
  key), label, training datasets and scans, the full training configuration, the training
  history summary and library versions;
- ``reference.npy``: the quantile-normalization reference (quantile models only);
- ``history.csv``: the per-epoch curves;
- ``calibration.npy``: :data:`CALIBRATION_PLANES` normalized training planes (float16,
  shape (N, size, size); :meth:`msnb.slices.SliceStore.sample_planes`), from which
  ``msnb segment --backend onnx-int8`` sets the int8 model's activation ranges (a bundle
  trained before these planes were kept has none, and runs in float32 only).

A bundle is written into a temporary directory and renamed into place
(:func:`msnb.files.atomic_path`), so a reader never sees half a bundle. A bundle that is
damaged anyway (an interrupted copy, an edited file) is refused by :func:`load_bundle` with
a :class:`BundleError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from msnb import __version__
from msnb.files import atomic_path, to_jsonable
from msnb.normalize import get_normalizer
from msnb.recipe import precision_of

__all__ = [
    "BUNDLE_FORMAT",
    "CALIBRATION_FILE",
    "CALIBRATION_PLANES",
    "Bundle",
    "BundleError",
    "library_versions",
    "load_bundle",
    "save_bundle",
]

BUNDLE_FORMAT = 1
#: Training planes a bundle keeps for int8 calibration (``calibration.npy``).
CALIBRATION_PLANES = 32
CALIBRATION_FILE = "calibration.npy"
#: Distributions whose versions a bundle also records, when installed: they shape its
#: inputs (nibabel, SimpleITK's N4 and Otsu, scipy's resizing) and its study's figures.
RECORDED_DISTRIBUTIONS = ("scipy", "pingouin", "nibabel", "nilearn", "SimpleITK")
_REQUIRED = {"architecture": str, "encoder": str, "size": int, "normalization": dict}


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def library_versions() -> dict[str, str]:
    """Versions of the libraries a bundle depends on.

    msnb, Python, torch, segmentation-models-pytorch and numpy, then those of
    :data:`RECORDED_DISTRIBUTIONS` that are installed (by distribution name).
    """
    import segmentation_models_pytorch as smp
    import torch

    versions = {
        "msnb": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": np.__version__,
    }
    for dist in RECORDED_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class Bundle:
    """A loaded model bundle.

    Attributes
    ----------
    model : torch.nn.Module or None
        In eval mode, on the CPU; None until :meth:`load_model` when the bundle was read
        with ``load_bundle(path, weights=False)`` (torch not imported).
    normalizer : Normalizer
        Rebuilt from the bundle (the quantile reference as saved).
    meta : dict
        The content of ``bundle.json``.
    path : Path
    """

    model: object
    normalizer: object
    meta: dict
    path: Path | None = None
    reference: np.ndarray | None = field(default=None, repr=False)

    def load_model(self):
        """The network: :attr:`model`, read from ``weights.pt`` first when not loaded yet.

        Raises
        ------
        BundleError
            ``weights.pt`` is damaged or does not fit ``bundle.json``.
        """
        if self.model is None:
            if self.path is None:
                raise ValueError("a bundle without a model or a folder to read it from")
            self.model = _load_weights(Path(self.path), self.meta)
        return self.model

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @property
    def model_id(self) -> str:
        return str(self.meta.get("model_id", ""))

    @property
    def min_brain_fraction(self) -> float:
        return float(self.meta.get("min_brain_fraction", 0.05))

    @property
    def slice_crop(self) -> str:
        """How axial planes are cropped before the resize (:func:`msnb.slices.compute_geometry`)."""
        return str(self.meta.get("slice_crop", "brain"))

    @property
    def precision(self) -> str:
        """The precision the model was trained in: ``"none"`` (float32), ``"bf16"`` or ``"fp16"``.

        From the training record; a bundle without one trained in float32.
        """
        return precision_of(self.meta)

    @property
    def config(self) -> dict:
        return dict(self.meta.get("config", {}))

    def calibration_planes(self) -> np.ndarray | None:
        """The training planes kept for int8 calibration (float32, (N, size, size)), or None
        when the bundle has none (written before they were kept, or not from a folder).

        Raises
        ------
        BundleError
            ``calibration.npy`` is damaged or its planes do not fit the bundle's size.
        """
        file = None if self.path is None else Path(self.path) / CALIBRATION_FILE
        if file is None or not file.is_file():
            return None
        try:
            planes = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(file, f"cannot read it: {exc}") from exc
        if planes.ndim != 3 or planes.shape[1:] != (self.size, self.size) or not len(planes):
            raise BundleError(file, f"holds planes of shape {planes.shape}, "
                              f"(N, {self.size}, {self.size}) expected")  # fmt: skip
        if not np.isfinite(planes).all():
            raise BundleError(file, "holds values that are not finite")
        return planes.astype(np.float32)

    def describe(self) -> dict:
        """The identity columns of results tables."""
        m = self.meta
        return {
            "model_id": self.model_id,
            "train_datasets": "+".join(m.get("train_datasets", [])),
            "label": m.get("label"),
            "normalization": m["normalization"]["name"],
            "architecture": m["architecture"],
            "encoder": m["encoder"],
        }


def save_bundle(
    path: str | os.PathLike,
    model,
    *,
    architecture: str,
    encoder: str,
    size: int,
    normalizer,
    meta: dict | None = None,
    threshold: float = 0.5,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write a bundle atomically.

    Parameters
    ----------
    path : path-like
        The bundle directory (replaced if it exists).
    model : torch.nn.Module
    architecture, encoder : str
    size : int
        Side of the model's input plane.
    normalizer : Normalizer
        Its ``name`` and ``key`` are stored, and ``reference`` when it has one.
    meta : dict, optional
        More fields for ``bundle.json`` (config, train_datasets, train_scans, history...).
        ``history`` (a list of dicts) is also written as ``history.csv``.
    threshold : float, default 0.5
    calibration : np.ndarray, shape (N, size, size), optional
        Normalized training planes kept as ``calibration.npy`` (float16) for int8 inference.
    """
    import torch

    path = Path(path)
    meta = dict(meta or {})
    reference = getattr(normalizer, "reference", None)
    info = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": architecture,
        "encoder": encoder,
        "in_channels": 1,
        "size": int(size),
        "threshold": float(threshold),
        "normalization": {
            "name": getattr(normalizer, "name", normalizer.key),
            "key": normalizer.key,
            "n_quantiles": None if reference is None else int(np.asarray(reference).size),
        },
        "versions": library_versions(),
        **meta,
    }
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "weights.pt")
        if reference is not None:
            np.save(tmp / "reference.npy", np.asarray(reference, dtype=np.float64))
        if calibration is not None:
            np.save(tmp / CALIBRATION_FILE, np.asarray(calibration, dtype=np.float16))
        if meta.get("history"):
            import pandas as pd

            pd.DataFrame(meta["history"]).to_csv(tmp / "history.csv", index=False)
        (tmp / "bundle.json").write_text(json.dumps(to_jsonable(info), indent=1))
    return path


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with the content of a ``bundle.json`` (None: nothing)."""
    fmt = meta.get("format", BUNDLE_FORMAT)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= BUNDLE_FORMAT:
        return f"bundle format {fmt!r} is not one this msnb reads (1 to {BUNDLE_FORMAT})"
    for key, kind in _REQUIRED.items():
        if key not in meta:
            return f"missing key {key!r}"
        value = meta[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key!r} must be of type {kind.__name__}, got {value!r}"
    if meta["size"] < 1:
        return f"'size' must be positive, got {meta['size']}"
    norm = meta["normalization"]
    if not all(isinstance(norm.get(k), str) for k in ("name", "key")):
        return f"'normalization' must hold a 'name' and a 'key' (strings), got {norm!r}"
    threshold = meta.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        return f"'threshold' must be a number in [0, 1], got {threshold!r}"
    return None


def _read_meta(path: Path) -> dict:
    file = path / "bundle.json"
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(file, f"not valid JSON (truncated or corrupt?): {exc}") from exc
    if not isinstance(meta, dict):
        raise BundleError(file, f"not a JSON object (got a {type(meta).__name__})")
    problem = _meta_problem(meta)
    if problem:
        raise BundleError(file, problem)
    return meta


def _read_reference(path: Path, meta: dict) -> np.ndarray | None:
    """The saved quantile reference (None when the bundle has none and needs none)."""
    file = path / "reference.npy"
    norm = meta["normalization"]
    if not file.is_file():
        if norm["name"].lower() == "quantile":
            raise BundleError(file, "missing: the bundle's quantile normalization needs it")
        return None
    try:
        ref = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(file, f"cannot read (truncated or not a .npy file): {exc}") from exc
    if ref.ndim != 1:
        raise BundleError(file, f"expected a 1-D array of quantiles, got shape {ref.shape}")
    n = norm.get("n_quantiles")
    if n is not None and n != ref.size:
        raise BundleError(file, f"holds {ref.size} quantiles, bundle.json says {n}")
    return ref


def _build_normalizer(path: Path, meta: dict, reference: np.ndarray | None):
    norm = meta["normalization"]
    source = path / ("bundle.json" if reference is None else "reference.npy")
    try:
        normalizer = get_normalizer(norm["name"], reference=reference)
    except ValueError as exc:
        raise BundleError(source, str(exc)) from exc
    if normalizer.key != norm["key"]:
        raise BundleError(
            source,
            f"normalization key {normalizer.key} does not match the bundle's {norm['key']} "
            "(reference.npy changed?)",
        )
    return normalizer


def _load_weights(path: Path, meta: dict):
    """The bundle's network with its saved weights (eval mode, CPU)."""
    import torch

    from msnb.models import build_model

    file = path / "weights.pt"
    try:
        # on the meta device: no random initialization of weights about to be replaced
        # (3.6 s of a 5 s load for UNet++-resnet18 on one CPU thread)
        with torch.device("meta"):
            model = build_model(meta["architecture"], meta["encoder"], encoder_weights=None)
    except (ValueError, KeyError) as exc:
        problem = str(exc).strip("'\"")[:200]
        raise BundleError(path / "bundle.json", f"cannot build its model: {problem}") from exc
    if file.stat().st_size == 0:
        raise BundleError(file, "empty file (an interrupted copy or a full disk?)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling damaged bytes raises many types (IndexError...)
        problem = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise BundleError(
            file,
            f"cannot read the weights (truncated or not a torch file): "
            f"{type(exc).__name__} {problem}".rstrip(),
        ) from exc
    if not isinstance(state, dict):
        raise BundleError(file, f"holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        expected = set(model.state_dict())
        missing, unexpected = len(expected - set(state)), len(set(state) - expected)
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        detail = f"{missing} missing, {unexpected} unexpected tensors" if not detail else detail
        raise BundleError(
            file,
            f"the weights do not fit the {meta['architecture']}/{meta['encoder']} model of "
            f"bundle.json ({detail[:200]})",
        ) from exc
    left = [name for name, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    if left:  # a tensor the state dict does not hold (not the case for smp's models)
        raise BundleError(file, f"the weights leave {len(left)} tensors unset ({left[0]}, ...)")
    model.eval()
    return model


def load_bundle(path: str | os.PathLike, *, weights: bool = True) -> Bundle:
    """Read a bundle: the model (eval mode, CPU), its normalizer and metadata.

    Parameters
    ----------
    path : path-like
        The bundle folder.
    weights : bool, default True
        Also read the network; False: leave :attr:`Bundle.model` None until
        :meth:`Bundle.load_model` (nothing here imports torch then, and ``weights.pt`` is
        checked only when read).

    Raises
    ------
    FileNotFoundError
        No ``bundle.json`` / ``weights.pt`` in ``path``.
    BundleError
        A file of the bundle is damaged or does not fit the others: ``bundle.json`` not
        JSON, missing or mistyped keys, a newer format, an unknown architecture or
        normalization; ``weights.pt`` empty, unreadable or of another model;
        ``reference.npy`` missing (quantile models), unreadable, or not the reference the
        bundle was saved with. The message names the file.
    """
    path = Path(path)
    if not (path / "bundle.json").is_file() or not (path / "weights.pt").is_file():
        raise FileNotFoundError(f"{path}: not a model bundle (bundle.json and weights.pt expected)")
    meta = _read_meta(path)
    reference = _read_reference(path, meta)
    normalizer = _build_normalizer(path, meta, reference)
    model = _load_weights(path, meta) if weights else None
    return Bundle(model=model, normalizer=normalizer, meta=meta, path=path, reference=reference)
