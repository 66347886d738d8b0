"""Time ``msnb segment`` end to end on one 1 mm 182 x 218 x 182 brain volume, and its options.

Usage::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 HF_HUB_OFFLINE=1 \
        .venv/bin/python benchmarks/segment_speed.py [--size 224] [--runs 5] [--out DIR]

The input is nilearn's MNI152 2009 T1 template at 1 mm (no network needed), brain-masked,
cropped about its center to 182 x 218 x 182 (the FSL MNI grid's shape) and written with an
LPS affine; the model is an untrained UNet++-resnet18 bundle at ``--size`` (speed does not
depend on the weights), keeping a third of the volume's own model planes as its int8
calibration planes (a trained bundle keeps 32 of its training planes). It reports, each as the median of ``--runs`` runs:

1. ``msnb segment`` end to end in a fresh process (process start included), for each
   ``--backend``, ``torch``, ``onnx`` (ONNX Runtime) and ``onnx-int8`` (its int8
   quantization), alternating in rounds; the first run of ``onnx`` (which exports the
   network to ``model.onnx``) and of ``onnx-int8`` (which quantizes it) are reported apart;
   then the in-process stages of one run of each (brain mask, normalize, slice, infer,
   unslice);
2. the imports: ``import torch``, ``import msnb.segment`` (what the CLI imports before the
   bundle), ``segmentation_models_pytorch`` (timm, torchvision, ``torch._dynamo``),
   ``onnxruntime`` and all that ``msnb segment --backend onnx`` imports, each in a fresh
   process;
3. inference options on ``--sweep-slices`` of the volume's own model planes, in slices/s and
   as a ratio to msnb's default (channels-last, batch 16, all threads): batch size,
   channels-last, threads, a frozen TorchScript trace, ``torch.export``, and ONNX Runtime
   (msnb's ``onnx`` backend, :class:`msnb.onnxrt.OnnxNetwork`) when it is installed, and
   that export quantized to int8 (:func:`msnb.onnxrt.quantize_onnx`, the ``onnx-int8``
   backend: it changes the probabilities; on this untrained bundle the difference says
   nothing about the masks). The
   options are measured in rounds (every option once per round), so a load that changes
   during the run weighs on all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (182, 218, 182)


def make_volume(out: Path) -> Path:
    """The brain-masked MNI152 2009 template, cropped to :data:`SHAPE`, LPS, as NIfTI."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    tpl = load_mni152_template(resolution=1)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    data = np.where(mask, np.asarray(tpl.dataobj, dtype=np.float32), 0)
    start = [(n - s) // 2 for n, s in zip(data.shape, SHAPE, strict=True)]
    data = data[tuple(slice(a, a + s) for a, s in zip(start, SHAPE, strict=True))]
    aff = tpl.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array(start)
    flip = np.array(
        [[-1, 0, 0, SHAPE[0] - 1], [0, -1, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    path = out / "mni_1mm_182x218x182_lps.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1, ::-1]), aff @ flip), str(path))
    return path


def make_bundle(out: Path, flair: Path, size: int) -> Path:
    from msnb.bundle import CALIBRATION_FILE, save_bundle
    from msnb.models import build_model
    from msnb.normalize import build_reference, get_normalizer
    from msnb.preprocess import compute_brain_mask

    data = np.asarray(nib.load(flair).dataobj, dtype=np.float32)
    norm = get_normalizer("quantile", build_reference([(data, compute_brain_mask(data))]))
    path = out / f"bundle-{size}"
    model = build_model("unetplusplus", "resnet18")
    save_bundle(
        path, model, architecture="unetplusplus", encoder="resnet18", size=size, normalizer=norm
    )
    planes = model_planes(flair, path, 48)[..., ::3]
    np.save(path / CALIBRATION_FILE, np.moveaxis(planes, 2, 0).astype(np.float16))
    return path


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def time_end_to_end(flair: Path, bundle: Path, out: Path, runs: int) -> None:
    """The backends end to end, alternating (run i of each in round i), then the stages."""
    from msnb.segment import segment_file

    cmd = [sys.executable, "-m", "msnb.cli", "segment", str(flair), "--model", str(bundle)]
    for f in ("model.onnx", "model.onnx.json", "model.int8.onnx", "model.int8.onnx.json"):
        (bundle / f).unlink(missing_ok=True)
    for backend, what in (("onnx", "exports model.onnx"), ("onnx-int8", "quantizes it")):
        first = _wall([*cmd, "--backend", backend, "--out", str(out / f"seg-{backend}-first")])
        print(f"msnb segment --backend {backend}, first run ({what}): {first:.2f} s")
    walls: dict[str, list[float]] = {"torch": [], "onnx": [], "onnx-int8": []}
    for i in range(runs):
        for backend, values in walls.items():
            run = [*cmd, "--backend", backend, "--out", str(out / f"seg-{backend}{i}")]
            values.append(_wall(run))
    for backend, values in walls.items():
        print(f"msnb segment --backend {backend}, end to end, process start included: ", end="")
        print(_median(values))
    for a, b in (("torch", "onnx"), ("onnx", "onnx-int8")):
        ratios = [x / y for x, y in zip(walls[a], walls[b], strict=True)]
        print(f"  {a} / {b} per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    for backend in walls:
        res = segment_file(flair, bundle, out / f"seg-steps-{backend}", backend=backend)
        steps = {k: round(v, 2) for k, v in res["steps"].items()}
        print(f"  {backend}: in-process stages of one run (s): {steps}, total", end=" ")
        print(f"{res['seconds']:.1f} s")


def time_imports(runs: int) -> None:
    onnx_path = "msnb.cli, msnb.segment, msnb.onnxrt, msnb.predict, msnb.metrics, onnxruntime"
    for what in (
        "torch",
        "msnb.segment",
        "msnb.segment, segmentation_models_pytorch",
        "onnxruntime",
        onnx_path,
    ):
        walls = [_wall([sys.executable, "-c", f"import {what}"]) for _ in range(runs)]
        print(f"python -c 'import {what}': {_median(walls)}")


def model_planes(flair: Path, bundle_path: Path, n: int) -> np.ndarray:
    """``n`` normalized model planes of the volume, taken evenly from its brain slices."""
    from msnb.bundle import load_bundle
    from msnb.nifti import load_image
    from msnb.preprocess import compute_brain_mask
    from msnb.slices import brain_slices, compute_geometry, to_model_plane

    bundle = load_bundle(bundle_path)
    vol = load_image(flair)
    brain = compute_brain_mask(vol.data)
    zs = brain_slices(brain, min_brain_fraction=bundle.min_brain_fraction)
    print(f"{len(zs)} of {vol.shape[2]} axial slices hold brain and are predicted")
    image = bundle.normalizer(vol.data, brain)
    geom = compute_geometry(brain, bundle.size, crop=bundle.slice_crop)
    pick = np.asarray(zs)[np.linspace(0, len(zs) - 1, min(n, len(zs))).astype(int)]
    return to_model_plane(image[:, :, pick], geom)


def _runners(bundle, example, *, onnx_dir: Path, calibration: np.ndarray) -> dict:
    """Inference callables ``f(batch) -> probabilities`` by option name (``calibration``:
    model planes (N, S, S) for the int8 model's activation ranges)."""
    import torch

    from msnb.predict import infer_slices

    model = bundle.model

    def msnb_infer(batch_size, channels_last, threads=None):
        def run(planes):
            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                return infer_slices(
                    model, planes, batch_size=batch_size, channels_last=channels_last
                )
            finally:
                torch.set_num_threads(before)

        return run

    runners = {
        "default: channels-last, batch 16": msnb_infer(16, True),
        "batch 1": msnb_infer(1, True),
        "batch 4": msnb_infer(4, True),
        "batch 32": msnb_infer(32, True),
        "contiguous (no channels-last), batch 16": msnb_infer(16, False),
        "1 thread": msnb_infer(16, True, threads=1),
    }
    model = model.to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))
    runners["TorchScript, frozen (trace + freeze)"] = _planes_runner(frozen)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    runners["torch.export module"] = _planes_runner(exported)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("ONNX Runtime: not installed, not measured")
    else:
        from msnb.onnxrt import OnnxNetwork, export_onnx, quantize_onnx

        fp32 = OnnxNetwork(export_onnx(bundle, onnx_dir / "onnx-sweep"))
        runners["ONNX Runtime (msnb's onnx backend), batch 16"] = _onnx_runner(fp32)
        int8 = quantize_onnx(fp32.path, fp32.path.with_name("int8.onnx"), calibration)
        runners[INT8] = _onnx_runner(OnnxNetwork(int8))
    return runners


def _planes_runner(module, batch_size: int = 16):
    import torch

    def run(planes):
        stack = torch.from_numpy(np.ascontiguousarray(np.moveaxis(planes, 2, 0))[:, None])
        with torch.inference_mode():
            for i in range(0, len(stack), batch_size):
                torch.sigmoid(module(stack[i : i + batch_size]))

    return run


def _onnx_runner(network, batch_size: int = 16):
    def run(planes):
        return network.infer(planes, batch_size=batch_size)

    return run


INT8 = "ONNX Runtime int8 (msnb's onnx-int8 backend; changes the masks), batch 16"


def time_options(flair: Path, bundle_path: Path, out: Path, n: int, rounds: int) -> None:
    import torch

    from msnb.bundle import load_bundle

    planes = model_planes(flair, bundle_path, n)
    bundle = load_bundle(bundle_path)
    example = torch.from_numpy(np.ascontiguousarray(np.moveaxis(planes[..., :4], 2, 0))[:, None])
    t = time.perf_counter()
    runners = _runners(
        bundle, example, onnx_dir=out, calibration=np.moveaxis(planes[..., ::3], 2, 0)
    )
    print(f"preparing the traced, exported (and ONNX) models: {time.perf_counter() - t:.1f} s")
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():  # warm-up: first calls allocate and pick kernels
        run(planes[..., :2])
    for _ in range(rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            run(planes)
            rates[name].append(planes.shape[2] / (time.perf_counter() - t))
    base = statistics.median(rates["default: channels-last, batch 16"])
    print(
        f"inference options on {planes.shape[2]} planes of {planes.shape[0]} px, {rounds} rounds:"
    )
    print("| option | slices/s (median) | ratio to msnb's default |\n|---|---:|---:|")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {med / base:.2f} |")
    default = runners["default: channels-last, batch 16"](planes)
    for name in (n for n in runners if n.startswith("ONNX Runtime")):
        diff = np.abs(runners[name](planes) - default).max()
        print(f"{name} against the default: max |probability difference| {diff:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=5, help="runs per end-to-end/import median")
    ap.add_argument("--sweep-slices", type=int, default=48, help="planes per option timing")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the option timings")
    ap.add_argument("--out", default="/tmp/segment-bench")
    ap.add_argument(
        "--only", choices=["end-to-end", "imports", "options"], action="append", default=[]
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flair = make_volume(out)
    bundle = make_bundle(out, flair, args.size)
    import msnb

    print(f"msnb {msnb.__version__} from {Path(msnb.__file__).parent}")
    print(f"volume {SHAPE}, model UNet++-resnet18 at {args.size} px")
    only = set(args.only) or {"end-to-end", "imports", "options"}
    if "end-to-end" in only:
        time_end_to_end(flair, bundle, out, args.runs)
    if "imports" in only:
        time_imports(args.runs)
    if "options" in only:
        time_options(flair, bundle, out, args.sweep_slices, args.rounds)


if __name__ == "__main__":
    main()
