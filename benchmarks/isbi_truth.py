"""What ISBI 2015's truth (rater 1, or the union of both raters as the paper) does to Dice.

Usage::

    .venv/bin/msnb phantom --preset quick --out /tmp/ph_quick
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \\
        .venv/bin/python benchmarks/isbi_truth.py /tmp/ph_quick --seed 0 --seed 1

On the quick phantom at the quick study's settings (64 px, batch 4, 3 epochs of 400
slices, float32 so the numbers repeat across CPUs), measured in one run:

- training label: the ISBI-like model trained on ``rater1`` and on ``union``, each scored
  on the other three datasets (their consensus), per seed;
- test truth: the MSSEG-train-like model scored on the ISBI-like scans against ``rater1``
  and against ``union``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from msnb.predict import evaluate_scans
from msnb.sources import load_datasets, resolve_datasets
from msnb.train import TrainConfig, train_model

DATASETS = ["isbi2015", "msseg2016_train", "msseg2016_test", "3dmrms"]
QUICK = dict(size=64, batch_size=4, epochs=3, max_slices_per_epoch=400, autocast="none")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument("--out", default="/tmp/isbi-truth")
    args = ap.parse_args()
    specs = resolve_datasets(DATASETS, args.data_root)
    scans = {d: load_datasets({d: specs[d]}) for d in DATASETS}
    out, rows = Path(args.out), []
    for seed in args.seed or [0]:
        for label in ("rater1", "union"):
            cfg = TrainConfig(**QUICK, label=label, seed=seed, progress=False)
            res = train_model(scans["isbi2015"], cfg, cache_dir=out / "cache",
                              bundle_path=out / f"isbi-{label}-{seed}")  # fmt: skip
            for test in DATASETS[1:]:
                t = evaluate_scans(res.bundle_path, scans[test], progress=False, autocast="none")
                rows.append({"what": f"train ISBI on {label}", "seed": seed, "test": test,
                             "dice": float(t.dice.mean())})  # fmt: skip
        cfg = TrainConfig(**QUICK, seed=seed, progress=False)
        res = train_model(scans["msseg2016_train"], cfg, cache_dir=out / "cache",
                          bundle_path=out / f"msseg-{seed}")  # fmt: skip
        for truth in ("rater1", "union"):
            t = evaluate_scans(res.bundle_path, scans["isbi2015"], label=truth, progress=False,
                               autocast="none")  # fmt: skip
            rows.append({"what": f"ISBI truth {truth}", "seed": seed, "test": "isbi2015",
                         "dice": float(t.dice.mean())})  # fmt: skip
        print(pd.DataFrame(rows).tail(8).to_string(index=False), flush=True)
    df = pd.DataFrame(rows)
    print("\nMean Dice per variant and seed (over its test sets):")
    print(df.groupby(["what", "seed"]).dice.mean().unstack().round(3).to_string())


if __name__ == "__main__":
    main()
