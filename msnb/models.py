"""Segmentation networks (segmentation-models-pytorch) and the paper's loss.

Networks take one channel (a normalized FLAIR slice) and return one logit map. Encoders
start from random weights by default (``encoder_weights=None``); ImageNet weights are
opt-in and never downloaded silently: ``"imagenet"`` reads smp's Hugging Face cache in
offline mode unless ``allow_download=True``, and a path loads a local weights file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from msnb.recipe import ARCHITECTURES, canonical_architecture

__all__ = [
    "WeightsUnavailableError",
    "build_model",
    "describe_weights",
    "torch_cached_weights",
    "count_parameters",
    "weighted_bce_with_logits",
]


class WeightsUnavailableError(RuntimeError):
    """Pretrained encoder weights were asked for but are not available offline."""


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Make huggingface_hub offline for the block (it reads HF_HUB_OFFLINE at import)."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def torch_cached_weights(encoder: str) -> Path | None:
    """torchvision's ImageNet weights of ``encoder`` in torch's hub cache, if there.

    torchvision names them ``<arch>-<hash>.pth`` under ``$TORCH_HOME/hub/checkpoints``
    (``resnet18-f37072fd.pth``); smp's ResNet encoders take that state dict as is. The
    newest file wins when several match. Nothing is downloaded.
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(folder.glob(f"{encoder}-*.pth"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _from_hub(cls, encoder: str, in_channels: int, classes: int, *, allow_download: bool):
    """smp's ImageNet weights from the Hugging Face cache (offline unless allowed)."""
    try:
        with _hub_offline(not allow_download):
            return cls(
                encoder_name=encoder,
                encoder_weights="imagenet",
                in_channels=in_channels,
                classes=classes,
            )
    except KeyError:
        raise
    except Exception as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for encoder {encoder!r} are not available offline ({type(exc).__name__}). "
            "Provide them in one of these ways: (0) put torchvision's ImageNet file "
            f"({encoder}-<hash>.pth) in {Path(torch.hub.get_dir()) / 'checkpoints'}; "
            "(1) pass encoder_weights='/path/to/encoder.safetensors' "
            "(a state dict of the 3-channel encoder, e.g. model.safetensors of the Hugging Face repo "
            f"smp-hub/{encoder}.imagenet); (2) pre-populate the Hugging Face cache on a connected "
            f"machine (`huggingface-cli download smp-hub/{encoder}.imagenet`) and copy HF_HOME here; "
            "(3) allow_download=True where the network is reachable; or use encoder_weights=None."
        ) from exc


def build_model(
    architecture: str = "unetplusplus",
    encoder: str = "resnet18",
    *,
    encoder_weights: str | os.PathLike | None = None,
    in_channels: int = 1,
    classes: int = 1,
    allow_download: bool = False,
) -> nn.Module:
    """An smp ``UnetPlusPlus`` or ``Unet`` returning logits of shape (B, classes, H, W).

    Parameters
    ----------
    architecture : {"unetplusplus", "unet"}, default "unetplusplus"
    encoder : str, default "resnet18"
        Any smp encoder name (``smp.encoders.get_encoder_names()``), including ``tu-*``.
    encoder_weights : None, "imagenet" or path, default None
        None: random initialization (no network access). ``"imagenet"``: torchvision's
        ImageNet file in torch's hub cache (:func:`torch_cached_weights`) when there, else
        smp's weights from the local Hugging Face cache (``HF_HOME``); offline unless
        ``allow_download``. A
        path: a ``.pth``/``.pt``/``.safetensors`` state dict of the encoder for 3-channel
        input (e.g. smp's ``model.safetensors`` of ``smp-hub/resnet18.imagenet``); the first
        convolution is adapted to ``in_channels`` the way smp does.
    in_channels : int, default 1
    classes : int, default 1
    allow_download : bool, default False
        Let ``"imagenet"`` download from the Hugging Face hub.

    Raises
    ------
    WeightsUnavailableError
        ``"imagenet"`` asked for offline and not in the cache; the message says how to
        provide the weights.
    """
    import segmentation_models_pytorch as smp

    cls = getattr(smp, ARCHITECTURES[canonical_architecture(architecture)])
    if encoder_weights is None:
        return cls(
            encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes
        )
    if str(encoder_weights) == "imagenet":
        cached = torch_cached_weights(encoder)
        if cached is not None:
            return build_model(
                architecture,
                encoder,
                encoder_weights=cached,
                in_channels=in_channels,
                classes=classes,
            )
        return _from_hub(cls, encoder, in_channels, classes, allow_download=allow_download)
    path = Path(encoder_weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"encoder weights file {path} does not exist (encoder_weights must be None, "
            "'imagenet' or the path of a local state dict)"
        )
    model = cls(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=classes)
    state = _load_state_dict(path)
    state = {k.removeprefix("encoder."): v for k, v in state.items() if not k.startswith("fc.")}
    # nn.Module's own method: smp's encoders override load_state_dict without a return value
    missing, _ = nn.Module.load_state_dict(model.encoder, state, strict=False)
    if missing:
        raise WeightsUnavailableError(
            f"{path}: not a state dict of encoder {encoder!r} (missing {len(missing)} keys, "
            f"e.g. {missing[0]})"
        )
    if in_channels != 3:
        model.encoder.set_in_channels(in_channels, pretrained=True)
    return model


def describe_weights(encoder_weights: str | os.PathLike | None, encoder: str = "resnet18") -> dict:
    """What a model's encoder started from, for its bundle: the setting and, for a local
    weights file (given, or torchvision's file in the torch cache for ``"imagenet"``), its
    resolved path and SHA-256, so a bundle names the exact file."""
    if encoder_weights is None:
        return {"encoder_weights": None}
    import hashlib

    if str(encoder_weights) == "imagenet":
        cached = torch_cached_weights(encoder)
        if cached is None:
            return {"encoder_weights": "imagenet", "source": "Hugging Face cache (smp-hub)"}
        return {**describe_weights(cached), "encoder_weights": "imagenet"}
    path = Path(encoder_weights).expanduser().resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"encoder_weights": str(path), "file": str(path), "sha256": digest}


def weighted_bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, *, pos_weight: float = 0.8
) -> torch.Tensor:
    """The paper's weighted binary cross-entropy, averaged over pixels.

    ``loss = -(w * y * log(p) + (1 - w) * (1 - y) * log(1 - p))`` with ``p = sigmoid(logits)``,
    computed stably from logits (``-log p = softplus(-z)``, ``-log(1 - p) = softplus(z)``).

    Parameters
    ----------
    logits, target : torch.Tensor, same shape (e.g. (B, 1, H, W))
    pos_weight : float, default 0.8
        ``w``, the weight of lesion pixels.
    """
    z = logits.float()
    y = target.float()
    loss = pos_weight * y * nn.functional.softplus(-z) + (1 - pos_weight) * (
        1 - y
    ) * nn.functional.softplus(z)
    return loss.mean()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
