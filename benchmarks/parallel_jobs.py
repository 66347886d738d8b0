"""One job with every core or one single-threaded job per core? (``make study --jobs``).

Usage::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \
        .venv/bin/python benchmarks/parallel_jobs.py [--size 64] [--batch 8] [--steps 25]

Trains UNet++-resnet18 (bf16 autocast, as training does on a CPU with bf16 support) on
random slices, first in one process with all cores, then in one single-threaded process
per core at the same time, and prints the slices/s of each way and their ratio, measured in
this one run. A study's parallel jobs share the cores (``OMP_NUM_THREADS`` is the
number of cores divided by ``--jobs``, see :mod:`msnb.study.runners`): one thread each for
``make study``'s 2 jobs on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def worker(threads: int, size: int, batch: int, steps: int) -> float:
    import torch

    from msnb.models import build_model, weighted_bce_with_logits

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 1, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.99).float()
    model = build_model("unetplusplus", "resnet18")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = weighted_bce_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times[3:])


def run(procs: int, threads: int, args) -> float:
    cmd = [sys.executable, __file__, "--worker", str(threads)]
    cmd += ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    children = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(procs)
    ]
    return sum(float(c.communicate()[0].strip().splitlines()[-1]) for c in children)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(worker(args.worker, args.size, args.batch, args.steps))
        return
    cores = os.cpu_count() or 1
    one = run(1, cores, args)
    many = run(cores, 1, args)
    print(f"UNet++-resnet18, {args.size} px, batch {args.batch}, {cores} cores")
    print(f"one process x {cores} threads: {one:.1f} slices/s")
    print(f"{cores} processes x 1 thread:  {many:.1f} slices/s in all")
    print(f"ratio (parallel jobs / one job): {many / one:.2f}")


if __name__ == "__main__":
    main()
