"""How much the phantom looks like real FLAIR: issue 13's realism table per phantom dataset.

Generates a preset (default ``quick``; ``--reuse`` measures an existing phantom in
``--out``) and measures every scan's FLAIR against its noiseless lesion truth with
:func:`msnb.phantom.realism.image_realism`: each image divided by the mode of its
non-lesion brain intensities, then the lesion intensity (median, 10th and 90th
percentile), the non-lesion brain's 95th and 5th percentiles, the share of lesion voxels
no brighter than that 95th percentile, the median gradient magnitude in the brain, the
lesion count (6-connected) and median size. Each dataset's row is the median over its
scans (for the lesion count: the range over scans); the last column is the real FLAIR
range (:data:`msnb.phantom.realism.REAL_FLAIR`), and ``ok`` says whether every dataset
lands inside it (lesion p10 / p90: within 0.05 of the pooled real value).

Usage::

    python benchmarks/phantom_realism.py [--preset quick] [--out DIR] [--reuse] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from msnb.phantom import generate_phantom
from msnb.phantom.realism import REAL_FLAIR, ROWS, image_realism, within_real


def _read(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def measure(root: Path) -> dict[str, list[dict[str, float]]]:
    """Every scan's realism rows, per dataset, from a phantom folder's files."""
    meta = json.loads((root / "phantom.json").read_text())
    voxel = float(meta["grid"]["voxel_mm"])
    out: dict[str, list[dict[str, float]]] = {}
    for s in meta["scans"]:
        folder = root / meta["folders"][s["dataset"]]
        flair = _read(folder / s["files"]["flair"])
        truth = _read(folder / s["files"]["truth"]) > 0
        out.setdefault(s["dataset"], []).append(image_realism(flair, flair > 0, truth, voxel))
    return out


def summarize(per_dataset: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, str]]:
    """Each dataset's printed cell per row, and the ``ok`` flag of each row."""
    cells: dict[str, dict[str, str]] = {}
    ok = {row: True for row in ROWS}
    for ds, scans in per_dataset.items():
        cells[ds] = {}
        for row in ROWS:
            vals = np.array([s[row] for s in scans], float)
            med = float(np.nanmedian(vals))
            if row == "n_lesions":
                cells[ds][row] = f"{np.nanmin(vals):.0f}-{np.nanmax(vals):.0f}"
                ok[row] &= bool(np.nanmedian(vals) >= REAL_FLAIR[row][0] / 2)
                ok[row] &= bool(np.nanmedian(vals) <= REAL_FLAIR[row][1] * 2)
                continue
            cells[ds][row] = f"{med:.2f}" if row not in ("lesion_voxels", "lesion_mm3") else (
                f"{med:.1f}")  # fmt: skip
            ok[row] &= within_real(row, med)
    cells["ok"] = {row: "OK" if flag else "FAIL" for row, flag in ok.items()}
    return cells


def print_table(cells: dict[str, dict[str, str]], voxel_mm: float) -> None:
    """The realism table as Markdown: one column per dataset, then the real range."""
    datasets = [d for d in cells if d != "ok"]
    print(f"| property (voxel {voxel_mm} mm) | " + " | ".join(datasets) + " | real FLAIR | ok |")
    print("|---" * (len(datasets) + 3) + "|")
    for row, label in ROWS.items():
        lo, hi = REAL_FLAIR[row]
        real = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        vals = " | ".join(cells[d][row] for d in datasets)
        print(f"| {label} | {vals} | {real} | {cells['ok'][row]} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="phantom folder (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--reuse", action="store_true", help="measure an existing phantom in --out")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="msnb_realism_") as tmp:
        root = Path(args.out or tmp)
        if not args.reuse:
            generate_phantom(root, preset=args.preset, seed=args.seed, workers=args.workers,
                             progress=False)  # fmt: skip
        meta = json.loads((root / "phantom.json").read_text())
        print(f"# phantom realism: preset={meta['preset']} seed={meta['seed']} out={root}")
        print("lesion: the noiseless truth; rows: median over a dataset's scans "
              "(lesion count: range over scans)\n")  # fmt: skip
        print_table(summarize(measure(root)), float(meta["grid"]["voxel_mm"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
