"""What smaller training settings cost in cross-dataset Dice on the quick phantom.

Usage::

    .venv/bin/msnb phantom --preset quick --out /tmp/ph_quick
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \
        .venv/bin/python benchmarks/quick_settings_dice.py /tmp/ph_quick \
        --setting ref:96:16:8:480 --setting quick:64:8:5:384

Each ``--setting NAME:SIZE:BATCH:EPOCHS:SLICES_PER_EPOCH[:LR[:FOREGROUND[:WARMUP[:SELECTION]]]]``
(LR default 1e-3, FOREGROUND the ``foreground_fraction``, default 0, WARMUP the
``lr_warmup_steps``, default 0, SELECTION the ``selection_metric``, default quick.yaml's) trains with ``parameters/quick.yaml``'s
recipe (UNet++-resnet18, quantile normalization onto its template, its checkpoint choice)
changed by the setting on each ``--train`` dataset (a fixed amount of work, no time budget, so the
numbers repeat), evaluates it in 3D on every other quick-phantom dataset, and prints the
mean Dice per (setting, training dataset), the training and evaluation time, and each
setting's Dice and time as a ratio of the first setting's, measured in this one run.
``--autocast`` sets the precision (default none: float32); ``--seed`` (repeatable) runs
several seeds, and then each setting also gets its mean in-domain validation Dice and the
seed-to-seed SD of each (train, test) cell: the quick study's convergence targets.
``--workers 2`` trains two runs at once, one thread each (a study's ``--jobs 2``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch

from msnb.datasets import CONSENSUS_FALLBACK
from msnb.paths import parameters_dir
from msnb.predict import evaluate_scans
from msnb.sources import load_datasets, resolve_datasets
from msnb.study import load_study
from msnb.study.jobs import template_parameters
from msnb.train import TrainConfig, train_model

DATASETS = ["isbi2015", "msseg2016_train", "msseg2016_test", "3dmrms"]


def parse_setting(text: str) -> dict:
    name, size, batch, epochs, slices, *rest = text.split(":")
    return {
        "setting": name,
        "size": int(size),
        "batch_size": int(batch),
        "epochs": int(epochs),
        "max_slices_per_epoch": int(slices),
        "lr": float(rest[0]) if rest else 1e-3,
        "foreground_fraction": float(rest[1]) if len(rest) > 1 else 0.0,
        "lr_warmup_steps": int(rest[2]) if len(rest) > 2 else 0,
        **({"selection_metric": rest[3]} if len(rest) > 3 else {}),
    }


def one_run(job: tuple) -> list[dict]:
    """Train one (setting, training set, seed) and test it on the other datasets."""
    st, tr, seed, args = job
    torch.set_num_threads(args.threads)
    specs = resolve_datasets(DATASETS, args.data_root)
    scans = {d: load_datasets({d: specs[d]}) for d in DATASETS}
    study = load_study(parameters_dir() / "quick.yaml")  # the quick study's recipe ...
    recipe = {k: v for k, v in study.training.items() if k != "template"}
    recipe.update(template_parameters(study.training["template"], specs))
    cfg = TrainConfig.from_parameters(  # ... with the setting's changes
        {
            **recipe,
            **{k: v for k, v in st.items() if k != "setting"},
            "label": CONSENSUS_FALLBACK.get(tr, "consensus"),
            "autocast": args.autocast,
            "seed": seed,
            "progress": False,
        }
    )
    t = time.perf_counter()
    res = train_model(
        scans[tr],
        cfg,
        bundle_path=Path(args.out) / f"{st['setting']}-{tr}-{args.autocast}-seed{seed}",
        cache_dir=Path(args.out) / f"cache-{os.getpid()}",
    )
    train_s = time.perf_counter() - t
    h = res.history
    seen = float(h["slices"].sum())
    rows = []
    for test in DATASETS:
        if test == tr:
            continue
        t = time.perf_counter()
        table = evaluate_scans(
            res.bundle_path,
            scans[test],
            label=CONSENSUS_FALLBACK.get(test, "consensus"),
            progress=False,
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
                "train_slices_per_s": seen / res.timings["train_steps"],
                "validation_s": res.timings["validation"],
                # pooled validation Dice of the kept checkpoint (in-domain, unseen patients)
                "best_val_dice": float(h.loc[h.epoch == res.best_epoch, "val_dice"].iloc[0]),
                "eval_s_per_scan": (time.perf_counter() - t) / len(table),
            }
        )
    print(pd.DataFrame(rows).to_string(index=False), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("--setting", action="append", type=parse_setting, required=True)
    ap.add_argument("--train", action="append", default=None)
    ap.add_argument("--out", default="/tmp/quick-settings")
    ap.add_argument("--autocast", default="none", help="none (float32), bf16 or auto")
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    args.threads = 1 if args.workers > 1 else torch.get_num_threads()
    trains = args.train or ["msseg2016_train", "isbi2015"]
    jobs = [(*j, args) for j in itertools.product(args.setting, trains, args.seed or [0])]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        rows = [r for result in pool.map(one_run, jobs) for r in result]
    df = pd.DataFrame(rows)
    per = df.groupby(["setting", "train", "seed"], sort=False).agg(
        dice=("dice", "mean"),
        train_s=("train_s", "first"),
        slices_per_s=("train_slices_per_s", "first"),
        eval_s_per_scan=("eval_s_per_scan", "median"),
    )
    print("\nMean cross-dataset Dice per setting, training dataset and seed:")
    per = per.join(df.groupby(["setting", "train", "seed"], sort=False)["best_val_dice"].first())
    print(per.round(3).to_string())
    summary = df.groupby("setting", sort=False).agg(
        dice=("dice", "mean"),
        train_s=("train_s", "mean"),
        eval_s_per_scan=("eval_s_per_scan", "median"),
    )
    cells = df.groupby(["setting", "train", "test"], sort=False)["dice"].std(ddof=1)
    summary["val_dice_in_domain"] = df.groupby("setting", sort=False)["best_val_dice"].mean()
    summary["cell_sd_mean"] = cells.groupby("setting", sort=False).mean()
    summary["cell_sd_max"] = cells.groupby("setting", sort=False).max()
    ref = summary.iloc[0]
    summary["dice_minus_ref"] = summary["dice"] - ref["dice"]
    summary["train_time_ratio"] = summary["train_s"] / ref["train_s"]
    summary["eval_time_ratio"] = summary["eval_s_per_scan"] / ref["eval_s_per_scan"]
    print(f"\nRatios to the first setting ({summary.index[0]}):")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
