"""Generate a phantom: run every scan (in worker processes), write the datasets and metadata.

Each dataset folder is written under a temporary name and renamed when complete, and
``phantom.json`` is written last, so an interrupted run leaves nothing that looks like a
phantom (docs/phantom.md sections 6-8); the next run removes the temporaries of a killed
one. Worker processes end with the process that started them, even when it is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from msnb import __version__
from msnb.files import FolderError, atomic_path, clean_stale_temporaries, write_json
from msnb.nifti import save_nifti
from msnb.phantom.anatomy import load_template
from msnb.phantom.config import PRESETS, PhantomConfig, make_config
from msnb.phantom.layout import ScanTask, dataset_folder, scan_tasks
from msnb.phantom.lesions import compute_lesion_stats
from msnb.phantom.scanner import measure_contrast, render_contrast
from msnb.phantom.simulate import simulate_scan

__all__ = [
    "generate_phantom",
    "library_versions",
    "recorded_parameters",
    "register_cli",
    "run_task",
]


def _write_scan(res: dict, task: ScanTask, root: Path) -> None:
    """Write the task's files: the FLAIR as float32, every mask and the labels as uint8."""
    arrays = {
        "flair": (res["flair"], np.float32),
        "brain": (res["brain"], np.uint8),
        "truth": (res["truth"], np.uint8),
        "tissue": (res["tissue"], np.uint8),
        "consensus": (res["consensus"], np.uint8),
    }
    for k, m in enumerate(res["raters"], 1):
        arrays[f"rater{k}"] = (m, np.uint8)
    for role, rel in task.files.items():
        data, dtype = arrays[role]
        save_nifti(np.asarray(data).astype(dtype), res["affine"], root / rel, dtype=dtype)


def run_task(cfg: PhantomConfig, seed: int, task: ScanTask, roots: dict[str, str]) -> dict:
    """Simulate one scan, write its files under ``roots[task.dataset]``, return its record.

    Returns
    -------
    dict
        The scan's entry of ``phantom.json``'s ``scans`` (docs/phantom.md section 8) plus
        ``seconds``.
    """
    t0 = time.perf_counter()
    res = simulate_scan(cfg, seed, task)
    _write_scan(res, task, Path(roots[task.dataset]))
    sub = res["subject"]
    stats = compute_lesion_stats(res["truth"], sub, cfg.lesions)
    contrast = measure_contrast(
        render_contrast(sub, res["pv"], res["zmap"], res["jitter"], cfg.lesions, res["sd"]),
        sub,
        res["pv"],
    )
    return {
        "dataset": task.dataset, "subject": task.subject, "timepoint": f"{task.timepoint:02d}",
        "center": task.center, "target_load_ml": task.load_ml, **stats,
        "n_generated_lesions": res["n_generated"],
        "contrast_lesion_wm": contrast["lesion_wm"], "contrast_gm_wm": contrast["gm_wm"],
        "jitter": res["jitter"], "files": dict(task.files),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


#: ``prctl`` option: the signal a process gets when its parent ends (Linux).
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when ``parent`` ends, however it ends.

    On Linux the kernel sends the worker SIGKILL (``prctl(PR_SET_PDEATHSIG)``); elsewhere
    a thread polls the parent's pid each second. Without this, the workers of a killed
    generation wait for tasks forever (each holding a few hundred MB).
    """
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent ended before the worker got here
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _run_in_pool(cfg, seed, tasks, roots, workers: int, bar) -> list[dict]:
    ctx = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    )
    results = []
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = [pool.submit(run_task, cfg, seed, t, roots) for t in tasks]
        try:
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def _run_tasks(
    cfg: PhantomConfig, seed: int, tasks: list[ScanTask], roots: dict[str, str], workers: int,
    progress: bool,
) -> list[dict]:  # fmt: skip
    """Every task's record, in the order of ``tasks``."""
    with tqdm(total=len(tasks), desc=f"phantom {cfg.preset}", disable=not progress) as bar:
        if workers == 1:
            results = []
            for task in tasks:
                results.append(run_task(cfg, seed, task, roots))
                bar.update()
        else:
            results = _run_in_pool(cfg, seed, tasks, roots, workers, bar)
    order = {(t.dataset, t.subject, f"{t.timepoint:02d}"): i for i, t in enumerate(tasks)}
    return sorted(results, key=lambda r: order[(r["dataset"], r["subject"], r["timepoint"])])


def library_versions() -> dict[str, str]:
    """Versions of what a phantom's bytes depend on: numpy and scipy (simulation), nibabel
    (NIfTI files), nilearn (the MNI152 templates), Python and msnb."""
    from importlib.metadata import version

    found = {name: version(name) for name in ("numpy", "scipy", "nibabel", "nilearn")}
    return {**found, "python": platform.python_version(), "msnb": __version__}


def recorded_parameters(value):
    """``value`` (a :class:`PhantomConfig`) made JSON-ready for ``phantom.json``.

    A dataclass field whose metadata has ``record_default=False`` is left out while it
    and the fields its ``record_with`` names hold their defaults: parameters added later
    leave the ``phantom.json`` of a preset that does not use them byte-identical (its
    SHA-256 keys the study's jobs).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        changed = {f.name: getattr(value, f.name) != f.default for f in fields}
        return {f.name: recorded_parameters(getattr(value, f.name)) for f in fields
                if f.metadata.get("record_default", True)
                or any(changed[n] for n in (f.name, *f.metadata.get("record_with", ())))}  # fmt: skip
    if isinstance(value, dict):
        return {k: recorded_parameters(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [recorded_parameters(v) for v in value]
    return value


def _metadata(cfg: PhantomConfig, seed: int, results: list[dict]) -> dict:
    """The content of ``phantom.json`` (docs/phantom.md section 8)."""
    tpl = load_template(cfg.voxel_mm, cfg.anatomy)
    return {
        "msnb_version": __version__,
        "versions": library_versions(),
        "preset": cfg.preset,
        "seed": int(seed),
        "parameters": recorded_parameters(cfg),
        "grid": {"voxel_mm": cfg.voxel_mm, "affine": tpl.affine.tolist(),
                 "shape": list(tpl.grid_shape)},
        "folders": {s.key: dataset_folder(s.key) for s in cfg.datasets},
        "scans": [{k: v for k, v in r.items() if k != "seconds"} for r in results],
    }  # fmt: skip


def generate_phantom(
    out_dir: str | os.PathLike,
    *,
    preset: str = "tiny",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    config: PhantomConfig | None = None,
) -> Path:
    """Generate the synthetic multi-center phantom (docs/phantom.md).

    Parameters
    ----------
    out_dir : path
        Folder that receives ``isbi2015/``, ``msseg2016/``, ``3dmrms/`` and ``phantom.json``.
        Each dataset folder is written under a temporary name and renamed when complete.
    preset : {"tiny", "quick", "standard"}, default "tiny"
    seed : int, default 0
        Same seed, same bytes (whatever ``workers``).
    workers : int, optional
        Processes (default: ``min(2, cpu count)``); 1 runs in this process.
    progress : bool, default True
        Show a tqdm progress bar.
    config : PhantomConfig, optional
        Overrides the preset's parameters (``preset`` is then only recorded).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    msnb.files.FolderError
        ``out_dir`` is a file, cannot be created or is not writable; checked (and the
        temporaries of killed generations there removed) before any scan is simulated.
    """
    cfg = config or make_config(preset)
    out = _output_folder(out_dir)
    tasks = scan_tasks(cfg, seed)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    load_template(cfg.voxel_mm, cfg.anatomy)  # load once before forking
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        folders = {}
        for name in dict.fromkeys(dataset_folder(s.key) for s in cfg.datasets):
            folders[name] = stack.enter_context(atomic_path(out / name))
            folders[name].mkdir()
        roots = {s.key: str(folders[dataset_folder(s.key)]) for s in cfg.datasets}
        results = _run_tasks(cfg, seed, tasks, roots, workers, progress)
    elapsed = time.perf_counter() - t0
    write_json(out / "phantom.json", _metadata(cfg, seed, results))
    write_json(out / ".phantom_timing.json", {
        "seconds": elapsed, "scans": len(results), "workers": workers,
        "scan_seconds": [r["seconds"] for r in results],
    })  # fmt: skip
    return out


def _output_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir``, created if needed, without the temporaries of killed generations.

    Raises
    ------
    msnb.files.FolderError
        ``out_dir`` is a file, cannot be created or is not writable (the message names it).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FolderError(f"{out}: not a folder (the phantom is written into a folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FolderError(f"{out}: cannot create the phantom folder: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise FolderError(f"{out}: the phantom folder is not writable")
    clean_stale_temporaries(out)
    return out


def _cli_phantom(args: argparse.Namespace) -> int:
    out = generate_phantom(args.out, preset=args.preset, seed=args.seed, workers=args.workers)
    print(f"phantom {args.preset} (seed {args.seed}) written to {out}")
    return 0


def register_cli(sub) -> None:
    """Add the ``phantom`` subcommand to an argparse subparsers object."""
    p = sub.add_parser("phantom", help="generate the synthetic multi-center FLAIR phantom")
    p.add_argument("--preset", choices=PRESETS, default="tiny", help="size of the phantom")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--workers", type=int, default=None, help="processes (default 2)")
    p.set_defaults(func=_cli_phantom)
