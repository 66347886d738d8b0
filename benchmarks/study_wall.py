"""Wall time, stage times and peak memory of a whole study run (e.g. ``make study``).

Usage::

    MSNB_OUTPUTS=/tmp/study-bench .venv/bin/python benchmarks/study_wall.py parameters/quick.yaml [--jobs 2]

Runs ``msnb study FILE`` in a subprocess with the allocator settings of the Makefile,
samples the resident memory of the whole process tree (the runner and papermill's
kernels) every half second with psutil (an ipykernel dependency), and prints the wall
time, the peak memory of the tree and of its largest process, and the stage times the study
wrote to ``<outputs>/<study>/timings.json``. Run it on an empty ``MSNB_OUTPUTS`` to time a
fresh machine's ``make study`` (phantom generation included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from msnb.study import load_study
from msnb.study.jobs import read_job_record


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(sum, max) resident bytes over ``proc`` and its descendants."""
    total = biggest = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        biggest = max(biggest, rss)
    return total, biggest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    env = {
        **os.environ,
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": "68719476736",
        "HF_HUB_OFFLINE": "1",
    }
    msnb = Path(sys.executable).with_name("msnb")
    cmd = [str(msnb), "study", args.study, "--jobs", str(args.jobs)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    ps = psutil.Process(proc.pid)
    peak_tree = peak_proc = 0
    while proc.poll() is None:
        total, biggest = tree_rss(ps)
        peak_tree, peak_proc = max(peak_tree, total), max(peak_proc, biggest)
        time.sleep(0.5)
    wall = time.perf_counter() - start
    study = load_study(args.study)
    timings = json.loads((study.out_dir / "timings.json").read_text())["seconds"]
    print(f"\n{' '.join(cmd)}: exit {proc.returncode}")
    print(f"wall time: {wall:.0f} s ({wall / 60:.1f} min)")
    print(
        f"peak memory: {peak_tree / 2**30:.2f} GiB for the process tree, "
        f"{peak_proc / 2**30:.2f} GiB for its largest process"
    )
    print("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    for kind in ("train", "eval", "agreement"):
        records = [read_job_record(p) for p in (study.out_dir / kind).glob("*.job.json")]
        secs = sorted(r["seconds"] for r in records if "seconds" in r)
        if secs:
            print(
                f"{kind}: {len(secs)} notebooks, median {secs[len(secs) // 2]:.1f} s, sum {sum(secs):.0f} s"
            )


if __name__ == "__main__":
    main()
