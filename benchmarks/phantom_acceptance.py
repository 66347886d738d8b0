"""Acceptance measurements of the synthetic phantom (project issue 3).

Generates a preset (default ``quick``) and measures, from the written files:

- rater agreement: MSSEG rater-vs-consensus and rater-vs-rater Dice, ISBI rater1-vs-rater2
  Dice, 3D-MR-MS consensus-vs-truth Dice (means over scans);
- lesion statistics: median load per dataset against docs/phantom.md section 5, share of lesion
  volume in lesions within 3 mm of the ventricles;
- contrast: median lesion/WM and GM/WM ratio per center on the contrast stage (before
  gamma and scale);
- scanner shift: median normal-appearing-WM intensity per center after linear min-max and
  after rank-based quantile normalization to a common reference;
- speed: seconds per scan and for the whole preset.

Usage::

    python benchmarks/phantom_acceptance.py [--preset quick] [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from msnb.datasets import load_scans
from msnb.masks import dice
from msnb.phantom import generate_phantom, make_config

TARGETS = {"msseg_rc": 0.72, "msseg_rr": 0.61, "isbi_rr": 0.73}


def _read(path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def rater_agreement(root: Path) -> dict:
    """Mean Dice over scans for each agreement measure."""
    out: dict[str, list[float]] = {"msseg_rc": [], "msseg_rr": [], "isbi_rr": [], "mrms_ct": []}
    for ds in ("msseg2016_train", "msseg2016_test"):
        for scan in load_scans(ds, root / "msseg2016"):
            cons = _read(scan.masks["consensus"]) > 0
            raters = [_read(scan.masks[r]) > 0 for r in scan.raters]
            out["msseg_rc"].append(np.nanmean([dice(r, cons) for r in raters]))
            out["msseg_rr"].append(
                np.nanmean([dice(a, b) for a, b in itertools.combinations(raters, 2)])
            )
    for scan in load_scans("isbi2015", root / "isbi2015"):
        out["isbi_rr"].append(
            dice(_read(scan.masks["rater1"]) > 0, _read(scan.masks["rater2"]) > 0)
        )
    meta = json.loads((root / "phantom.json").read_text())
    for s in meta["scans"]:
        if s["dataset"] == "3dmrms":
            cons = _read(root / "3dmrms" / s["files"]["consensus"]) > 0
            truth = _read(root / "3dmrms" / s["files"]["truth"]) > 0
            out["mrms_ct"].append(dice(cons, truth))
    return {k: float(np.nanmean(v)) for k, v in out.items()}


def lesion_stats(root: Path, preset: str) -> dict:
    meta = json.loads((root / "phantom.json").read_text())
    cfg = make_config(preset)
    rows = {}
    for spec in cfg.datasets:
        scans = [s for s in meta["scans"] if s["dataset"] == spec.key]
        loads = [s["load_ml"] for s in scans]
        pv_vol = sum(s["load_ml"] * s["periventricular_share"] for s in scans)
        rows[spec.key] = {
            "median_load_ml": float(np.median(loads)),
            "target_ml": spec.load_median_ml,
            "ratio": float(np.median(loads) / spec.load_median_ml),
            "median_lesions": float(np.median([s["n_lesions"] for s in scans])),
            "periventricular_share": float(pv_vol / sum(loads)),
        }
    return rows


def contrast(root: Path, preset: str) -> dict:
    meta = json.loads((root / "phantom.json").read_text())
    cfg = make_config(preset)
    rows = {}
    for name in sorted({s["center"] for s in meta["scans"]}):
        scans = [s for s in meta["scans"] if s["center"] == name]
        c = cfg.centers[name]
        rows[name] = {
            "lesion_wm": float(np.median([s["contrast_lesion_wm"] for s in scans])),
            "lesion_wm_table": c.lesion_ratio,
            "gm_wm": float(np.median([s["contrast_gm_wm"] for s in scans])),
            "gm_wm_table": c.gm_ratio,
        }
    return rows


def scanner_shift(root: Path, n_quantiles: int = 1001) -> dict:
    """NAWM median per center after min-max and after quantile normalization."""
    meta = json.loads((root / "phantom.json").read_text())
    levels = np.linspace(0, 1, n_quantiles)
    per_scan = []
    for s in meta["scans"]:
        folder = root / meta["folders"][s["dataset"]]
        img = _read(folder / s["files"]["flair"]).astype(np.float64)
        tissue = _read(folder / s["files"]["tissue"])
        truth = _read(folder / s["files"]["truth"]) > 0
        brain = img > 0
        vals = img[brain]
        lo, hi = vals.min(), vals.max()
        nawm = (tissue == 3) & ~truth & brain
        minmax = (img[nawm] - lo) / (hi - lo)
        q = np.quantile(vals, levels)
        per_scan.append((s["center"], vals, img[nawm], np.median(minmax), (q - lo) / (hi - lo)))
    reference = np.mean([p[4] for p in per_scan], axis=0)
    rows: dict[str, dict[str, list[float]]] = {}
    for center, vals, nawm_vals, mm, _ in per_scan:
        sorted_vals = np.sort(vals)
        ranks = np.searchsorted(sorted_vals, nawm_vals, side="left") / max(vals.size - 1, 1)
        qn = np.interp(ranks, levels, reference)
        rows.setdefault(center, {"minmax": [], "quantile": []})
        rows[center]["minmax"].append(mm)
        rows[center]["quantile"].append(float(np.median(qn)))
    med = {c: {k: float(np.median(v)) for k, v in d.items()} for c, d in sorted(rows.items())}
    spread = {
        k: float(max(m[k] for m in med.values()) - min(m[k] for m in med.values()))
        for k in ("minmax", "quantile")
    }
    return {"per_center": med, "spread": spread}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--reuse", action="store_true", help="measure an existing phantom in --out")
    args = ap.parse_args(argv)
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="msnb_phantom_")
        args.out = tmp.name
    root = Path(args.out)
    if not args.reuse:
        t0 = time.perf_counter()
        generate_phantom(root, preset=args.preset, seed=args.seed, workers=args.workers,
                         progress=False)  # fmt: skip
        wall = time.perf_counter() - t0
    else:
        wall = float("nan")
    timing = json.loads((root / ".phantom_timing.json").read_text())
    print(f"# phantom acceptance: preset={args.preset} seed={args.seed} out={root}")
    print(f"grid voxel {make_config(args.preset).voxel_mm} mm")
    print("\n## speed")
    print(f"whole preset: {wall:.1f} s wall including template loading "
          f"({timing['seconds']:.1f} s generation, {timing['scans']} scans, "
          f"{timing['workers']} workers)")  # fmt: skip
    print(f"per scan (one worker): mean {np.mean(timing['scan_seconds']):.2f} s, "
          f"max {np.max(timing['scan_seconds']):.2f} s")  # fmt: skip

    print("\n## rater agreement (mean Dice over scans)")
    agr = rater_agreement(root)
    for k, v in agr.items():
        target = TARGETS.get(k)
        flag = (
            ""
            if target is None
            else f"  target {target:.2f}  " + ("OK" if abs(v - target) <= 0.05 else "FAIL")
        )
        print(f"{k:10s} {v:.3f}{flag}")

    print("\n## lesion statistics")
    for k, r in lesion_stats(root, args.preset).items():
        ok = 1 / 1.5 <= r["ratio"] <= 1.5 and r["periventricular_share"] > 0.4
        print(f"{k:16s} median load {r['median_load_ml']:6.2f} mL (target {r['target_ml']:5.1f},"
              f" ratio {r['ratio']:.2f}), median lesions {r['median_lesions']:.0f}, "
              f"periventricular volume share {r['periventricular_share']:.2f}  "
              f"{'OK' if ok else 'FAIL'}")  # fmt: skip

    print("\n## contrast (contrast stage, median over the center's scans)")
    for k, r in contrast(root, args.preset).items():
        # the lesion core raises the excess contrast of pure lesion voxels by up to core_gain/2
        excess, gain = r["lesion_wm_table"] - 1, make_config(args.preset).lesions.core_gain
        ok = (1 + excess - 0.05 <= r["lesion_wm"] <= 1 + excess * (1 + gain / 2) + 0.05
              and abs(r["gm_wm"] - r["gm_wm_table"]) <= 0.05)  # fmt: skip
        print(f"{k:4s} lesion/WM {r['lesion_wm']:.3f} (table {r['lesion_wm_table']:.2f})  "
              f"GM/WM {r['gm_wm']:.3f} (table {r['gm_wm_table']:.2f})  "
              f"{'OK' if ok else 'FAIL'}")  # fmt: skip

    print("\n## scanner shift (median NAWM intensity per center)")
    sh = scanner_shift(root)
    for k, r in sh["per_center"].items():
        print(f"{k:4s} min-max {r['minmax']:.3f}  quantile {r['quantile']:.3f}")
    s = sh["spread"]
    print(f"spread between centers: min-max {s['minmax']:.3f} (need >= 0.1: "
          f"{'OK' if s['minmax'] >= 0.1 else 'FAIL'}), quantile {s['quantile']:.4f} "
          f"(need < 0.02: {'OK' if s['quantile'] < 0.02 else 'FAIL'})")  # fmt: skip
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
