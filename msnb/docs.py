"""Shared numpydoc text for parameters that many functions take (nilearn's ``fill_doc``).

A docstring names an entry as ``%(name)s`` on a line of its own; :func:`fill_doc` replaces
it with :data:`docdict`'s text, indented like the placeholder. Each parameter is thus
described once, and every signature that takes it says the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

__all__ = ["docdict", "fill_doc"]

F = TypeVar("F", bound=Callable)

docdict: dict[str, str] = {
    "data_root": """data_root : path-like, optional
    Folder holding the datasets' folders in their distributed layouts (``isbi2015/``,
    ``msseg2016/``, ``3dmrms/``; see :data:`msnb.datasets.DATASETS`). ``None`` or ``""``:
    the generated phantom.""",
    "phantom": """phantom : str, default "tiny"
    Phantom preset (``"tiny"``, ``"quick"``, ``"standard"``) used when no data root is
    given; generated once under ``<outputs>/phantom/<preset>-seed<seed>/``.""",
    "phantom_seed": """seed : int, default 0
    Seed of the phantom (same seed, same bytes).""",
    "progress": """progress : bool, default False
    Show progress bars (tqdm).""",
    "bundle": """bundle : Bundle or path-like
    A model bundle (:func:`msnb.bundle.load_bundle`) or its folder.""",
    "batch_size": """batch_size : int, default 16
    Slices per forward pass.""",
    "device": """device : str, default "auto"
    ``"auto"`` (CUDA, then MPS, then CPU), ``"cuda"``, ``"mps"`` or ``"cpu"``
    (:func:`msnb.device.pick_device`).""",
    "backend": """backend : {"auto", "torch", "onnx", "onnx-int8"} or Backend, default "auto"
    What runs the network (:func:`msnb.onnxrt.open_backend`): ``"onnx"`` ONNX Runtime on
    the CPU (exported once), ``"auto"`` that when it can be used, torch otherwise;
    ``"onnx-int8"`` the export quantized to int8 (faster, slightly different masks).""",
    "autocast": """autocast : {"auto", "bf16", "fp16", "none"}, default "none"
    Precision of the forward pass (:func:`msnb.device.resolve_speedups`); ``"none"`` is
    float32, ``"auto"`` bf16 where the device supports it.""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$", re.MULTILINE)


def fill_doc(func: F) -> F:
    """Replace each ``%(name)s`` line of ``func``'s docstring by :data:`docdict` ``[name]``.

    Raises
    ------
    KeyError
        A placeholder names no entry of :data:`docdict`.
    """
    doc = func.__doc__
    if doc:

        def expand(match: re.Match) -> str:
            indent = match["indent"]
            text = docdict[match["name"]]
            return "\n".join(indent + line if line else line for line in text.splitlines())

        func.__doc__ = _PLACEHOLDER.sub(expand, doc)
    return func
