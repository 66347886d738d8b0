"""Where and how a model runs: device choice, autocast, channels-last and seeding.

Training (:mod:`msnb.train`) and prediction (:mod:`msnb.predict`) both take their device
settings from here, so a model is trained and applied the same way.

``"auto"`` settings resolve per device: channels-last on for CUDA (measured on a 2-core
AVX-512 CPU, channels-last alone gave no gain there); autocast bf16 on a CPU with bf16
support and on CUDA devices that support it, otherwise float32.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np

__all__ = [
    "AUTOCAST_MODES",
    "DeviceError",
    "autocast",
    "gpu_likely",
    "pick_device",
    "resolve_speedups",
    "seed_everything",
]

AUTOCAST_MODES = ("auto", "bf16", "fp16", "none")


class DeviceError(ValueError):
    """A device that is unknown or not usable on this machine; the message names it."""


def _mps_available(torch) -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _check_cuda(name: str, index: int | None, torch) -> None:
    if not torch.cuda.is_available():
        why = (
            "this torch build has no CUDA support"
            if torch.version.cuda is None
            else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)"
        )
        raise DeviceError(f"device {name!r} is not available: {why}; use 'auto' or 'cpu'")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise DeviceError(
            f"device {name!r} is not available: this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})"
        )


def pick_device(name: str = "auto") -> str:
    """``"cuda"``, ``"mps"`` or ``"cpu"`` for ``name`` (``"auto"``: the best available).

    A named device is checked before any work: it must exist on this machine.

    Raises
    ------
    DeviceError
        ``name`` is not ``auto``, ``cpu``, ``cuda``, ``cuda:<index>`` or ``mps``, or that
        device is not available here (no GPU, a torch build without CUDA, no such index).
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available(torch) else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(
            f"unknown device {name!r}: use auto, cpu, cuda, cuda:<index> or mps"
        ) from exc
    if device.type == "cuda":
        _check_cuda(name, device.index, torch)
    elif device.type == "mps":
        if not _mps_available(torch):
            raise DeviceError(f"device {name!r} is not available here (no Apple MPS backend)")
    elif device.type != "cpu" or device.index not in (None, 0):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:<index> or mps")
    return name


def gpu_likely() -> bool:
    """Whether this machine likely has a GPU that torch could use, told without importing
    torch: an NVIDIA driver loaded (``/proc/driver/nvidia``) or an Apple silicon Mac."""
    if os.path.isdir("/proc/driver/nvidia"):
        return True
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def resolve_speedups(
    device: str, *, channels_last: str | bool = "auto", autocast: str = "auto"
) -> tuple[bool, str]:
    """``(channels_last, autocast)`` actually used on ``device`` for the given settings.

    Parameters
    ----------
    device : str
        A device from :func:`pick_device` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    channels_last : "auto" or bool, default "auto"
        ``"auto"``: on for CUDA only.
    autocast : {"auto", "bf16", "fp16", "none"}, default "auto"
        ``"auto"``: bf16 where the device supports it, else ``"none"`` (float32).
    """
    import torch

    if autocast not in AUTOCAST_MODES:
        raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_MODES)}, got {autocast!r}")
    kind = device.split(":")[0]
    cl = kind == "cuda" if channels_last == "auto" else channels_last
    ac = autocast
    if ac == "auto":
        if kind == "cpu":
            ac = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "none"
        elif kind == "cuda":
            ac = "bf16" if torch.cuda.is_bf16_supported() else "none"
        else:
            ac = "none"
    return bool(cl), ac


def autocast(device: str, mode: str):
    """A context manager running a model's forward pass in ``mode`` (``"none"``: float32)."""
    import torch

    if mode == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
