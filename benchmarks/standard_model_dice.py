"""Issue 13's model check: a UNet++-resnet18 trained on the standard phantom at 224 px, applied
with ``msnb segment`` to every phantom dataset, for the phantom before and after a change.

For each phantom version (``--before-src``: a checkout of msnb from before the change;
``--after-src``: default, this one) the script

1. generates the phantom (``--preset``, seed 0) with that version's code, in a subprocess
   (``OUT/<version>/phantom``; kept, so a rerun resumes);
2. trains one model with this msnb: ``msnb study`` on a one-model study file it writes
   (``OUT/<version>/study.yaml``: trained on MSSEG-2016 train with the quick recipe's
   sampler and checkpoint choice at ``--size`` px for ``--epochs`` epochs; the study has
   one training job and no evaluation job: ``msnb segment`` below does the scoring);
3. applies the bundle with ``msnb segment`` to every scan of every phantom dataset and
   scores each mask against the phantom's noiseless truth (Dice, per dataset mean and
   median), writing ``OUT/<version>/dice.csv``.

It prints one table: datasets as rows, the versions' mean (median) Dice as columns. The
bundle it trains (``OUT/after/outputs/<name>/train/*/``) is the recipe a user can train and
apply to their own scans (README, "Applying a trained model to a new scan").

Usage (the phantom before issue 13's realism work is commit 6cdc347, the parent of 911e5a6)::

    git worktree add /tmp/msnb-before 911e5a6^
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 HF_HUB_OFFLINE=1 \\
        .venv/bin/python benchmarks/standard_model_dice.py --before-src /tmp/msnb-before \\
        --out /data/standard-model [--epochs 10] [--size 224] [--device auto]

On a 2-core CPU the whole standard preset takes about 30 min to generate per version,
one epoch of 800 slices at 224 px about 12-13 min (measured: 717-779 s, README) and the
224 px inference about 35 s a scan (104 scans); ``--sample`` (37 scans, about 5 min per
version) and ``--segment-max N`` cut both. A GPU shortens the training and inference, not the
generation. ``--int8`` also segments with ``--backend onnx-int8`` (issue 14). ``--preset tiny
--size 32 --epochs 1`` is a rehearsal of a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

# the preset, or with --sample only these subjects of each center (the same bytes as those
# scans of the whole preset: a scan's random streams depend on its identity, not on the others)
GENERATE = """
import dataclasses, json, sys
from msnb.phantom.config import make_config
from msnb.phantom.generate import generate_phantom
cfg = make_config(sys.argv[2])
sample = json.loads(sys.argv[4])
if sample:
    cfg = dataclasses.replace(cfg, datasets=tuple(
        dataclasses.replace(d, centers=tuple((c, min(n, sample[d.key])) for c, n in d.centers))
        for d in cfg.datasets))
generate_phantom(sys.argv[1], preset=sys.argv[2], seed=0, workers=int(sys.argv[3]), config=cfg)
"""

# --sample: subjects per center; MSSEG-2016 train (the training set) whole
SAMPLE = {"isbi2015": 2, "msseg2016_train": 5, "msseg2016_test": 2, "3dmrms": 6}


def generate(src: Path, root: Path, preset: str, workers: int, sample: dict) -> dict:
    """The phantom of ``src``'s msnb in ``root`` (made unless its phantom.json exists)."""
    if not (root / "phantom.json").exists():
        env = {**os.environ, "PYTHONPATH": str(src)}
        cmd = [sys.executable, "-c", GENERATE, str(root), preset, str(workers), json.dumps(sample)]
        # in src: ``python -c`` puts the working folder first on sys.path
        subprocess.run(cmd, env=env, cwd=src, check=True)
    return json.loads((root / "phantom.json").read_text())


def study_file(path: Path, root: Path, meta: dict, args) -> Path:
    """A one-model study: MSSEG-2016 train at ``args.size`` px (ISBI 2015 is declared but,
    alone in ``experiments.single``, MSSEG-2016 train is tested on nothing: one job)."""
    import yaml

    folders = meta["folders"]
    spec = {
        "name": "standard_model",
        "description": "One UNet++-resnet18 on the phantom's MSSEG-2016 train (issue 13).",
        "datasets": {
            k: {"adapter": k, "root": str(root / folders[k])}
            for k in ("msseg2016_train", "isbi2015")
        },
        "training": {
            "architecture": "unetplusplus",
            "encoder": "resnet18",
            "encoder_weights": None,
            "size": args.size,
            "epochs": args.epochs,
            "max_slices_per_epoch": args.slices_per_epoch,
            "batch_size": args.batch_size,
            "foreground_fraction": 0.5,
            "lr": 0.001,
            "normalization": "quantile",
            "selection_metric": "pooled_dice",
            "max_val_slices": 200,  # as parameters/standard.yaml: every slice at 224 px is slow
            "label": "consensus",
            "device": args.device,
            "seeds": [0],
        },
        "experiments": {"single": ["msseg2016_train"]},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def train(version_dir: Path, study: Path) -> Path:
    """``msnb study`` on ``study``; the bundle folder of its one model."""
    env = {**os.environ, "MSNB_OUTPUTS": str(version_dir / "outputs")}
    msnb = [sys.executable, "-m", "msnb.cli"]
    subprocess.run([*msnb, "study", str(study), "--jobs", "1"], env=env, check=True)
    bundles = sorted((version_dir / "outputs" / "standard_model" / "train").glob("*/bundle.json"))
    if len(bundles) != 1:
        raise RuntimeError(f"{version_dir}: expected one trained bundle, found {len(bundles)}")
    return bundles[0].parent


def segment_and_score(
    root: Path, meta: dict, bundle: Path, out: Path, args, backend: str = "auto"
) -> pd.DataFrame:
    """``msnb segment`` on every scan of each dataset; Dice of each mask against the truth
    (with the mask's path and the command's seconds for the scan)."""
    from msnb.metrics import compute_metrics

    rows = []
    for dataset in meta["folders"]:
        scans = [s for s in meta["scans"] if s["dataset"] == dataset][: args.segment_max]
        folder = root / meta["folders"][dataset]
        summary = out / f"{dataset}.tsv"
        cmd = [sys.executable, "-m", "msnb.cli", "segment", "--model", str(bundle),
               "--out", str(out / dataset), "--skip-existing", "--summary", str(summary),
               "--device", args.device, "--backend", backend,
               *(str(folder / s["files"]["flair"]) for s in scans)]  # fmt: skip
        subprocess.run(cmd, check=True)
        done = pd.read_csv(summary, sep="\t").set_index("input")
        for s in scans:
            truth_img = nib.load(folder / s["files"]["truth"])
            truth = np.asanyarray(truth_img.dataobj) > 0
            row = done.loc[str(folder / s["files"]["flair"])]
            pred = np.asanyarray(nib.load(row["mask"]).dataobj) > 0
            voxel = float(np.prod(truth_img.header.get_zooms()[:3]))
            m = compute_metrics(truth, pred, voxel_volume_mm3=voxel)
            rows.append({"dataset": dataset, "subject": s["subject"],
                         "timepoint": s.get("timepoint", ""), "dice": m.dice,
                         "mask": row["mask"], "seconds": row["seconds"]})  # fmt: skip
    return pd.DataFrame(rows)


def int8_columns(root, meta, bundle, vdir, dice, args, version) -> dict:
    """The same scans with ``--backend onnx-int8``: its Dice against the truth and against
    the float32 masks (per dataset, mean), and the seconds per scan of both."""
    from msnb.masks import dice as mask_dice

    int8 = segment_and_score(root, meta, bundle, vdir / "segment-int8", args, "onnx-int8")
    int8.to_csv(vdir / "dice-int8.csv", index=False)
    agree = [
        mask_dice(np.asanyarray(nib.load(a).dataobj) > 0, np.asanyarray(nib.load(b).dataobj) > 0)
        for a, b in zip(dice["mask"], int8["mask"], strict=True)
    ]
    int8 = int8.assign(agreement=agree)
    print(f"# {version}: seconds per scan (median), float32 {dice.seconds.median():.1f}, "
          f"int8 {int8.seconds.median():.1f}; largest Dice change on one scan "
          f"{(int8.dice - dice.dice).abs().max():.3f}")  # fmt: skip
    by = int8.groupby("dataset")
    return {
        f"{version}, int8": [f"{a:.3f} ({b:.3f})" for a, b in zip(by.dice.mean(), by.dice.median(), strict=True)],
        f"{version}, int8 vs float32 masks": [f"{a:.3f}" for a in by.agreement.mean()],
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-src", type=Path, help="msnb checkout of the phantom before")
    ap.add_argument("--after-src", type=Path, default=REPO)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--slices-per-epoch", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2, help="phantom generation processes")
    ap.add_argument(
        "--sample",
        action="store_true",
        help=f"generate only these subjects per center: {SAMPLE} (the same bytes as the preset's)",
    )
    ap.add_argument("--segment-max", type=int, help="segment at most this many scans a dataset")
    ap.add_argument(
        "--int8",
        action="store_true",
        help="also segment with --backend onnx-int8 (issue 14): Dice and agreement with float32",
    )
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    versions = {"before": args.before_src, "after": args.after_src}
    table = {}
    for version, src in versions.items():
        if src is None:
            continue
        vdir = args.out / version
        vdir.mkdir(parents=True, exist_ok=True)
        root = vdir / "phantom"
        meta = generate(
            src.resolve(), root, args.preset, args.workers, SAMPLE if args.sample else {}
        )
        bundle = train(vdir, study_file(vdir / "study.yaml", root, meta, args))
        dice = segment_and_score(root, meta, bundle, vdir / "segment", args)
        dice.to_csv(vdir / "dice.csv", index=False)
        by = dice.groupby("dataset").dice
        table[version] = [f"{a:.3f} ({b:.3f})" for a, b in zip(by.mean(), by.median(), strict=True)]
        index = list(by.mean().index)
        if args.int8:
            table.update(int8_columns(root, meta, bundle, vdir, dice, args, version))
    print(f"# Dice of msnb segment masks against the noiseless truth, mean (median) per dataset; "
          f"UNet++-resnet18 at {args.size} px, {args.epochs} epochs on MSSEG-2016 train, "
          f"preset {args.preset}")  # fmt: skip
    counts = {k: int(v) for k, v in dice.groupby("dataset").size().items()}
    print(f"# scans segmented per dataset (the last version's): {counts}")
    print("| dataset | " + " | ".join(table) + " |\n|---" * 1 + "|---:" * len(table) + "|")
    for i, dataset in enumerate(index):
        print(f"| {dataset} | " + " | ".join(cells[i] for cells in table.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
