"""Model bundles: one directory holding everything inference needs.

Layout of ``<bundle>/``:

- ``weights.pt``: the network's ``state_dict`` (float32; the best-validation checkpoint);
- ``bundle.json``: architecture, encoder, slice size, threshold, normalization (name and
  key), label, training datasets and scans, the full training configuration, the training
  history summary and library versions;
- ``reference.npy``: the quantile-normalization reference (quantile models only);
- ``history.csv``: the per-epoch curves.

A bundle is written into a temporary directory and renamed into place
(:func:`msnb.nifti.atomic_path`), so a reader never sees half a bundle.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from msnb import __version__
from msnb.files import atomic_path, to_jsonable
from msnb.models import build_model
from msnb.normalize import get_normalizer
from msnb.recipe import precision_of

__all__ = [
    "BUNDLE_FORMAT",
    "Bundle",
    "library_versions",
    "load_bundle",
    "save_bundle",
]

BUNDLE_FORMAT = 1


def library_versions() -> dict[str, str]:
    """Versions of the libraries a bundle depends on."""
    import segmentation_models_pytorch as smp
    import torch

    return {
        "msnb": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": np.__version__,
    }


@dataclass
class Bundle:
    """A loaded model bundle.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode, on the CPU.
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
        if meta.get("history"):
            import pandas as pd

            pd.DataFrame(meta["history"]).to_csv(tmp / "history.csv", index=False)
        (tmp / "bundle.json").write_text(json.dumps(to_jsonable(info), indent=1))
    return path


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle: the model (eval mode, CPU), its normalizer and metadata.

    Raises
    ------
    FileNotFoundError
        No ``bundle.json`` / ``weights.pt`` in ``path``.
    ValueError
        The bundle's normalization key does not match its saved reference.
    """
    import torch

    path = Path(path)
    if not (path / "bundle.json").is_file() or not (path / "weights.pt").is_file():
        raise FileNotFoundError(f"{path}: not a model bundle (bundle.json and weights.pt expected)")
    meta = json.loads((path / "bundle.json").read_text())
    ref_path = path / "reference.npy"
    reference = np.load(ref_path) if ref_path.is_file() else None
    norm = meta["normalization"]
    normalizer = get_normalizer(norm["name"], reference=reference)
    if normalizer.key != norm["key"]:
        raise ValueError(
            f"{path}: normalization key {normalizer.key} does not match the bundle's {norm['key']} "
            "(reference.npy changed?)"
        )
    model = build_model(meta["architecture"], meta["encoder"], encoder_weights=None)
    state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return Bundle(model=model, normalizer=normalizer, meta=meta, path=path, reference=reference)
