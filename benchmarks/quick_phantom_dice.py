"""In-domain and cross-dataset Dice on the quick phantom, quantile vs linear normalization.

Usage::

    .venv/bin/msnb phantom --preset quick --out /tmp/ph_quick
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \
        .venv/bin/python benchmarks/quick_phantom_dice.py /tmp/ph_quick [--epochs 8] [--budget 150]

Trains UNet++-resnet18 (96 px) on the MSSEG-like training set with a patient split, then
reports the 3D Dice on the held-out validation patients' scans (in-domain) and on 3D-MR-MS
(cross-dataset), for each normalization.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from msnb.metrics import summarize
from msnb.predict import evaluate_scans
from msnb.sources import load_datasets, resolve_datasets
from msnb.train import TrainConfig, train_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--budget", type=float, default=150.0)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--out", default="/tmp/quick-dice")
    args = ap.parse_args()
    specs = resolve_datasets(["msseg2016_train", "3dmrms"], args.data_root)
    train_scans = load_datasets({"msseg2016_train": specs["msseg2016_train"]})
    cross = load_datasets({"3dmrms": specs["3dmrms"]})
    for norm in ("quantile", "linear"):
        t = time.perf_counter()
        cfg = TrainConfig(
            size=args.size,
            epochs=args.epochs,
            batch_size=16,
            normalization=norm,
            time_budget_s=args.budget,
            progress=False,
        )
        res = train_model(
            train_scans, cfg, bundle_path=Path(args.out) / norm, cache_dir=Path(args.out) / "cache"
        )
        val = [s for s in train_scans if s.patient_key in set(res.val_patients)]
        ind = evaluate_scans(res.bundle_path, val, progress=False)
        xd = evaluate_scans(res.bundle_path, cross, progress=False)
        s_in, s_x = summarize(ind).iloc[0], summarize(xd).iloc[0]
        print(
            f"{norm}: epochs {len(res.history)} (budget stop {res.stopped_by_budget}), best epoch {res.best_epoch}, "
            f"val slice Dice {res.best_val_dice:.3f}; in-domain 3D Dice {s_in.dice:.3f} "
            f"(n={len(ind)}, F1 {s_in.lesion_f1:.3f}); 3dmrms 3D Dice {s_x.dice:.3f} (n={len(xd)}, "
            f"F1 {s_x.lesion_f1:.3f}); {time.perf_counter() - t:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
