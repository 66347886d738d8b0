"""What smaller training settings cost in cross-dataset Dice on the quick phantom.

Usage::

    .venv/bin/msnb phantom --preset quick --out /tmp/ph_quick
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \
        .venv/bin/python benchmarks/quick_settings_dice.py /tmp/ph_quick \
        --setting ref:96:16:8:480 --setting quick:64:8:5:384

Each ``--setting NAME:SIZE:BATCH:EPOCHS:SLICES_PER_EPOCH[:LR]`` (LR default 1e-3) trains UNet++-resnet18 with
quantile normalization on each ``--train`` dataset (a fixed amount of work, no time
budget, so the numbers repeat), evaluates it in 3D on every other quick-phantom dataset,
and prints the mean Dice per (setting, training dataset), the training and evaluation
time, and each setting's Dice and time as a ratio of the first setting's, measured in
this one run. ``--autocast none`` trains and predicts in float32 (default: bf16 where the
CPU supports it); ``--seed`` (repeatable) runs several seeds.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd

from msnb.datasets import CONSENSUS_FALLBACK
from msnb.predict import evaluate_scans
from msnb.sources import load_datasets, resolve_datasets
from msnb.train import TrainConfig, train_model

DATASETS = ["isbi2015", "msseg2016_train", "msseg2016_test", "3dmrms"]


def parse_setting(text: str) -> dict:
    name, size, batch, epochs, slices, *lr = text.split(":")
    return {
        "setting": name,
        "size": int(size),
        "batch_size": int(batch),
        "epochs": int(epochs),
        "max_slices_per_epoch": int(slices),
        "lr": float(lr[0]) if lr else 1e-3,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("--setting", action="append", type=parse_setting, required=True)
    ap.add_argument("--train", action="append", default=None)
    ap.add_argument("--out", default="/tmp/quick-settings")
    ap.add_argument("--autocast", default="auto", help="auto (bf16 where supported) or none")
    ap.add_argument("--seed", type=int, action="append", default=None)
    args = ap.parse_args()
    trains = args.train or ["msseg2016_train", "isbi2015"]
    specs = resolve_datasets(DATASETS, args.data_root)
    scans = {d: load_datasets({d: specs[d]}) for d in DATASETS}
    rows = []
    for st, tr, seed in itertools.product(args.setting, trains, args.seed or [0]):
        label = CONSENSUS_FALLBACK.get(tr, "consensus")
        cfg = TrainConfig(
            size=st["size"],
            epochs=st["epochs"],
            batch_size=st["batch_size"],
            max_slices_per_epoch=st["max_slices_per_epoch"],
            lr=st["lr"],
            label=label,
            autocast=args.autocast,
            seed=seed,
            progress=False,
        )
        t = time.perf_counter()
        res = train_model(
            scans[tr],
            cfg,
            bundle_path=Path(args.out) / f"{st['setting']}-{tr}-{args.autocast}-seed{seed}",
            cache_dir=Path(args.out) / "cache",
        )
        train_s = time.perf_counter() - t
        seen = float(res.history["slices"].sum())
        loop_s = float(res.history["seconds"].sum())
        for test in DATASETS:
            if test == tr:
                continue
            t = time.perf_counter()
            table = evaluate_scans(
                res.bundle_path,
                scans[test],
                label=CONSENSUS_FALLBACK.get(test, "consensus"),
                progress=False,
                autocast=args.autocast,
            )
            rows.append(
                {
                    **st,
                    "train": tr,
                    "seed": seed,
                    "autocast": res.speedups["autocast"],
                    "test": test,
                    "dice": float(table["dice"].mean()),
                    "scans": len(table),
                    "train_s": train_s,
                    "train_slices_per_s": seen / loop_s,
                    "best_val_dice": res.best_val_dice,
                    "eval_s_per_scan": (time.perf_counter() - t) / len(table),
                }
            )
        print(pd.DataFrame(rows[-3:]).to_string(index=False), flush=True)
    df = pd.DataFrame(rows)
    per = df.groupby(["setting", "train", "seed"], sort=False).agg(
        dice=("dice", "mean"),
        train_s=("train_s", "first"),
        slices_per_s=("train_slices_per_s", "first"),
        eval_s_per_scan=("eval_s_per_scan", "median"),
    )
    print("\nMean cross-dataset Dice per setting, training dataset and seed:")
    print(per.round(3).to_string())
    summary = df.groupby("setting", sort=False).agg(
        dice=("dice", "mean"),
        train_s=("train_s", "mean"),
        eval_s_per_scan=("eval_s_per_scan", "median"),
    )
    ref = summary.iloc[0]
    summary["dice_minus_ref"] = summary["dice"] - ref["dice"]
    summary["train_time_ratio"] = summary["train_s"] / ref["train_s"]
    summary["eval_time_ratio"] = summary["eval_s_per_scan"] / ref["eval_s_per_scan"]
    print(f"\nRatios to the first setting ({summary.index[0]}):")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
