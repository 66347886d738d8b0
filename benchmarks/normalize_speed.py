"""Quantile normalization of a 1.7-million-voxel brain: median wall time over repeats.

Usage::

    .venv/bin/python benchmarks/normalize_speed.py [--repeats 7]

Moved out of the test suite (a timed test fails on a loaded machine); the target is about
0.3 s on an idle 2-core machine. Prints the median and the spread, with the linear
normalizer's median as the reference ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from msnb.normalize import LinearNormalizer, QuantileNormalizer, build_reference


def _times(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = 1_700_000
    image = (rng.gamma(3.0, 100.0, n) + rng.random(n)).astype(np.float32).reshape(170, 100, 100)
    brain = np.ones(image.shape, bool)
    quantile = QuantileNormalizer(build_reference([(image[:20], brain[:20])]))
    quantile(image[:10], brain[:10])  # warm-up
    q = _times(lambda: quantile(image, brain), args.repeats)
    lin = _times(lambda: LinearNormalizer()(image, brain), args.repeats)
    print(f"quantile: median {statistics.median(q):.3f} s (min {min(q):.3f}, max {max(q):.3f})")
    print(f"linear:   median {statistics.median(lin):.3f} s")
    print(f"ratio quantile / linear: {statistics.median(q) / statistics.median(lin):.1f}")


if __name__ == "__main__":
    main()
