"""A bundle's network on ONNX Runtime: the CPU backend of ``msnb segment``.

The bundle's torch network is exported once (:func:`export_onnx`: ``torch.onnx.export``'s
TorchScript-based exporter, opset :data:`OPSET`, a dynamic batch axis; it needs torch and the
``onnx`` package) to ``model.onnx``, with ``model.onnx.json`` beside it recording the SHA-256
of the ``weights.pt`` it was made from. The export goes into the bundle folder when msnb may
write there, otherwise into ``<MSNB_CACHE>/onnx/<first 16 hex digits of that SHA-256>/``; an
export is used from either place only when its record names the bundle's current weights,
so one made before the weights changed (a retrained or replaced bundle) is made again.

Running it (:class:`OnnxNetwork`) needs only ``onnxruntime`` and numpy: with an export in
place, ``msnb segment`` reads, normalizes, slices and predicts a scan without importing
torch, timm or torchvision (3.3 s of the 16.3 s issue 14 measured on a 2-core machine).
:func:`open_backend` chooses between it and the torch model (``--backend``). Probabilities
agree with torch's to about 1e-5 (float32 on both; README, **Speed**).

``--backend onnx-int8`` runs that export quantized to 8-bit integers by ONNX Runtime
(:func:`quantize_onnx`: static quantization in the QDQ format, int8 weights per output
channel, uint8 activations whose ranges are the MinMax of the network's activations on the
bundle's ``calibration.npy`` training planes). It is made once, like the float export, as
``model.int8.onnx`` with a record of both the weights' and the planes' SHA-256. On a 2-core
CPU without AVX-512 its inference was 1.3 times faster and the command 1.1-1.2 times; it
changes the masks slightly (README, **Speed**), so ``auto`` never chooses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msnb import __version__
from msnb.bundle import CALIBRATION_FILE, Bundle, BundleError
from msnb.device import gpu_likely, pick_device
from msnb.files import atomic_path, write_json
from msnb.nifti import OutputError
from msnb.paths import PathEscapeError, cache_root

__all__ = [
    "BACKENDS",
    "INT8_FILE",
    "OPSET",
    "Backend",
    "BackendError",
    "OnnxNetwork",
    "export_folders",
    "export_onnx",
    "find_export",
    "open_backend",
    "quantize_onnx",
    "weights_sha256",
]

#: The choices of ``--backend``: ``auto`` (ONNX Runtime when it can be used, see
#: :func:`open_backend`), ``torch``, ``onnx``, ``onnx-int8`` (chosen only by name).
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
#: The ONNX opset of exports (17: supported by onnxruntime since 1.14).
OPSET = 17
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: How :func:`quantize_onnx` quantizes (recorded beside the int8 export).
INT8_SCHEME = "static QDQ; int8 weights per channel; uint8 activations, MinMax calibration"


class BackendError(ValueError):
    """A ``--backend`` that cannot be used here; the message says why and what to do."""


def weights_sha256(bundle_path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a bundle's ``weights.pt``."""
    with open(Path(bundle_path) / "weights.pt", "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def export_folders(bundle: Bundle, digest: str) -> list[Path]:
    """Where an export of ``bundle`` may be, in order: its folder, then the cache's."""
    return [Path(bundle.path), cache_root() / "onnx" / digest[:16]]


def _files(int8: bool) -> tuple[str, str]:
    """The export's file name and its record's (``model.onnx`` and ``model.onnx.json``)."""
    name = INT8_FILE if int8 else ONNX_FILE
    return name, f"{name}.json"


def _record(bundle: Bundle, digest: str, int8: bool = False) -> dict:
    """What ``model.onnx.json`` records: the weights' SHA-256 and the network's identity
    (for the int8 export also the calibration planes' SHA-256 and the scheme)."""
    m = bundle.meta
    extra = {}
    if int8:
        with open(Path(bundle.path) / CALIBRATION_FILE, "rb") as f:
            extra = {"calibration_sha256": hashlib.file_digest(f, "sha256").hexdigest(),
                     "quantization": INT8_SCHEME}  # fmt: skip
    return {
        **extra,
        "weights_sha256": digest,
        "architecture": m["architecture"],
        "encoder": m["encoder"],
        "in_channels": int(m.get("in_channels", 1)),
        "size": bundle.size,
        "opset": OPSET,
        "msnb_version": __version__,
    }


def find_export(bundle: Bundle, digest: str | None = None, *, int8: bool = False) -> Path | None:
    """The ``model.onnx`` of ``bundle`` made from its current weights, or None.

    Parameters
    ----------
    bundle : Bundle
        Read from a folder.
    digest : str, optional
        :func:`weights_sha256` of the bundle (computed when missing).
    int8 : bool, default False
        The int8 export (``model.int8.onnx``), made from the current weights and
        calibration planes.
    """
    digest = digest or weights_sha256(bundle.path)
    wanted = {k: v for k, v in _record(bundle, digest, int8).items() if k != "msnb_version"}
    name, record = _files(int8)
    for folder in export_folders(bundle, digest):
        try:
            known = json.loads((folder / record).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        fits = isinstance(known, dict) and all(known.get(k) == v for k, v in wanted.items())
        if fits and (folder / name).is_file():
            return folder / name
    return None


def _write_recorded(bundle: Bundle, folder: Path, digest: str, int8: bool, write) -> Path:
    """``write(path)`` makes the export in ``folder`` (atomically), then its record is written;
    the old record goes first, so it never vouches for a file it was not written with."""
    name, record = _files(int8)
    if (folder / record).is_file():
        (folder / record).unlink()
    write(folder / name)
    write_json(folder / record, _record(bundle, digest, int8))
    return folder / name


def _write_export(model, bundle: Bundle, folder: Path, digest: str) -> Path:
    import torch

    example = torch.zeros(1, int(bundle.meta.get("in_channels", 1)), bundle.size, bundle.size)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()

    def write(path: Path) -> None:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing and deprecation
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            )

    return _write_recorded(bundle, folder, digest, False, write)


def export_onnx(bundle: Bundle, folder: str | os.PathLike | None = None) -> Path:
    """Export the bundle's network to ``model.onnx`` (and its record); needs torch and onnx.

    Parameters
    ----------
    bundle : Bundle
        Read from a folder (its weights are read here when not loaded yet).
    folder : path-like, optional
        Where to write; default: the first of :func:`export_folders` msnb may write to.

    Returns
    -------
    Path
        The ``model.onnx`` written.

    Raises
    ------
    msnb.bundle.BundleError
        ``weights.pt`` is damaged or does not fit ``bundle.json``.
    msnb.nifti.OutputError
        No folder could be written (the message names the last one and why).
    RuntimeError
        The exporter failed (``torch.onnx.OnnxExporterError`` also when ``onnx`` is not
        installed).
    """
    digest = weights_sha256(bundle.path)
    model = bundle.load_model()
    return _first_writable(
        bundle, digest, folder, lambda where: _write_export(model, bundle, where, digest)
    )


def _first_writable(bundle: Bundle, digest: str, folder, write) -> Path:
    """``write(folder)`` in ``folder``, or in the first of :func:`export_folders` that works."""
    folders = [Path(folder)] if folder is not None else export_folders(bundle, digest)
    for i, where in enumerate(folders):
        try:
            return write(where)
        except (OSError, PathEscapeError) as exc:
            if i == len(folders) - 1:
                problem = getattr(exc, "strerror", None) or str(exc)
                raise OutputError(where, f"cannot write the ONNX export: {problem}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def quantize_onnx(source: str | os.PathLike, target: str | os.PathLike, planes: np.ndarray) -> Path:
    """Quantize the float ONNX model ``source`` to int8 in ``target`` (:data:`INT8_SCHEME`).

    Parameters
    ----------
    source, target : path-like
        ``target`` is written atomically (a pre-processed copy of ``source`` lies beside it
        while it is made).
    planes : np.ndarray, shape (N, S, S)
        Normalized model planes whose activations set the ranges of the int8 activations.

    Raises
    ------
    ImportError
        ``onnxruntime.quantization`` or ``onnx`` is not installed.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = Path(target)
    stack = np.ascontiguousarray(planes, dtype=np.float32)[:, None]

    class Planes(CalibrationDataReader):
        def __init__(self, name: str):
            self.batches = iter([{name: stack[i : i + 4]} for i in range(0, len(stack), 4)])

        def get_next(self):
            return next(self.batches, None)

    with atomic_path(target) as tmp:
        pre = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            name = OnnxNetwork(pre).input
            quantize_static(
                str(pre), str(tmp), Planes(name), quant_format=QuantFormat.QDQ, per_channel=True
            )
        finally:
            pre.unlink(missing_ok=True)
    return target


def _write_int8(bundle: Bundle, source: Path, folder: Path, digest: str) -> Path:
    def write(path: Path) -> None:
        quantize_onnx(source, path, bundle.calibration_planes())

    return _write_recorded(bundle, folder, digest, True, write)


class OnnxNetwork:
    """A ``model.onnx`` in an ONNX Runtime CPU session (all cores, all graph optimizations).

    Parameters
    ----------
    path : path-like
    threads : int, optional
        Intra-op threads; default: the CPUs this process may use.

    Raises
    ------
    msnb.bundle.BundleError
        The file is not a model ONNX Runtime can load.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        options.intra_op_num_threads = int(threads or cpus or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail...)
            problem = " ".join(str(exc).split())[:200]
            raise BundleError(self.path, f"ONNX Runtime cannot load it: {problem}") from exc
        self.input = self.session.get_inputs()[0].name
        self.version = f"onnxruntime {ort.__version__}"

    def infer(self, planes: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
        """Sigmoid probabilities on slices, as :func:`msnb.predict.infer_slices`.

        Parameters
        ----------
        planes : np.ndarray, shape (S, S, Z)
            Normalized slices in the model plane.
        batch_size : int, default 16

        Returns
        -------
        np.ndarray of float32, shape (S, S, Z)
        """
        from scipy.special import expit

        stack = np.ascontiguousarray(np.moveaxis(planes, 2, 0), dtype=np.float32)[:, None]
        out = np.zeros(planes.shape, dtype=np.float32)
        for i in range(0, len(stack), batch_size):
            (logits,) = self.session.run(None, {self.input: stack[i : i + batch_size]})
            out[:, :, i : i + batch_size] = np.moveaxis(expit(logits[:, 0]), 0, 2)
        return out


@dataclass(frozen=True)
class Backend:
    """How a bundle's network runs (:func:`open_backend`).

    Attributes
    ----------
    name : str
        ``"torch"``, ``"onnx"`` or ``"onnx-int8"``.
    device : str
        The torch device; ``"cpu"`` for ONNX Runtime.
    network : OnnxNetwork or None
        The ONNX Runtime session (None: the bundle's torch model).
    version : str
        ``"torch 2.x"`` or ``"onnxruntime 1.x"``.
    exported : bool
        Whether the ONNX export was made now.
    """

    name: str
    device: str
    network: OnnxNetwork | None = None
    version: str = ""
    exported: bool = False

    def describe(self) -> dict:
        """The provenance fields: ``backend`` and ``backend_version``."""
        return {"backend": self.name, "backend_version": self.version}


def _torch_backend(bundle: Bundle, device: str) -> Backend:
    device = pick_device(device)
    bundle.load_model()
    import torch

    return Backend("torch", device, None, f"torch {torch.__version__}")


def _onnx_unusable(bundle: Bundle, device: str, *, chosen: bool, int8: bool = False) -> str | None:
    """Why ONNX Runtime cannot (or, for ``auto``, should not) run ``bundle``; None: it can."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if bundle.path is None:
        return "the bundle was not read from a folder (nothing to export)"
    if device not in ("auto", "cpu"):
        return f"ONNX Runtime runs msnb's models on the CPU, not on --device {device}"
    if int8 and not (Path(bundle.path) / CALIBRATION_FILE).is_file():  # read when quantizing
        return (f"{Path(bundle.path) / CALIBRATION_FILE} is missing: the bundle was trained "
                "before msnb kept calibration planes; train it again")  # fmt: skip
    if not chosen and bundle.precision != "none":
        return f"the model was trained in {bundle.precision}; torch runs it so"
    if not chosen and device == "auto" and gpu_likely():
        return "a GPU is likely present; torch may use it"
    return None


def _onnx_backend(bundle: Bundle, int8: bool = False) -> Backend:
    digest = weights_sha256(bundle.path)
    network, exported = _load_export(bundle, digest, False, lambda: export_onnx(bundle))
    if int8:
        source = network.path

        def make() -> Path:
            return _first_writable(
                bundle, digest, None, lambda where: _write_int8(bundle, source, where, digest)
            )

        network, made = _load_export(bundle, digest, True, make)
        exported = exported or made
    name = "onnx-int8" if int8 else "onnx"
    return Backend(name, "cpu", network, network.version, exported)


def _load_export(bundle: Bundle, digest: str, int8: bool, make) -> tuple[OnnxNetwork, bool]:
    """The export found (:func:`find_export`) in a session, or the one ``make()`` writes."""
    path = find_export(bundle, digest, int8=int8)
    if path is not None:
        try:
            return OnnxNetwork(path), False
        except BundleError:  # damaged since it was written: made again
            pass
    return OnnxNetwork(make()), True


def open_backend(bundle: Bundle, *, backend: str = "auto", device: str = "auto") -> Backend:
    """The backend that runs ``bundle``'s network, ready (exported, loaded).

    Parameters
    ----------
    bundle : Bundle
        May be read with ``load_bundle(path, weights=False)``: the ONNX path reads the
        weights only when it exports.
    backend : {"auto", "torch", "onnx", "onnx-int8"}, default "auto"
        ``"onnx"``: ONNX Runtime on the CPU, exporting the network first when no export made
        from the current weights exists (:func:`find_export`). ``"onnx-int8"``: that export
        quantized to int8 with the bundle's calibration planes (:func:`quantize_onnx`; made
        once and kept like the float export). ``"auto"``: the same when
        onnxruntime is installed, the device is ``auto`` (without a likely GPU,
        :func:`msnb.device.gpu_likely`) or ``cpu``, the model was trained in float32 and the
        export exists or can be made; torch otherwise.
    device : str, default "auto"
        The torch device (:func:`msnb.device.pick_device`); ONNX Runtime runs on the CPU.

    Raises
    ------
    BackendError
        ``backend`` is unknown, or ``"onnx"`` / ``"onnx-int8"`` cannot be used (onnxruntime
        missing, a GPU device, the export failed; for int8 also a bundle without
        calibration planes).
    msnb.device.DeviceError
        With torch: ``device`` is unknown or not available here.
    msnb.bundle.BundleError
        ``weights.pt`` is damaged or does not fit ``bundle.json``.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} (--backend): use {', '.join(BACKENDS)}")
    if backend == "torch":
        return _torch_backend(bundle, device)
    chosen, int8 = backend != "auto", backend == "onnx-int8"
    why = _onnx_unusable(bundle, device, chosen=chosen, int8=int8)
    if why is not None:
        if chosen:
            raise BackendError(f"--backend {backend}: {why}; use --backend torch (or auto)")
        return _torch_backend(bundle, device)
    try:
        return _onnx_backend(bundle, int8)
    except (RuntimeError, ImportError, OutputError) as exc:
        if chosen:
            problem = " ".join(str(exc).split())[:300]
            raise BackendError(f"--backend {backend}: the export failed: {problem}") from exc
        return _torch_backend(bundle, device)
