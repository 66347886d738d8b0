"""Time ``msnb segment`` end to end on one 1 mm brain volume (target: under 15 s on CPU).

Usage::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \
        .venv/bin/python benchmarks/segment_speed.py [--size 224] [--out /tmp/segment-bench]

The input is nilearn's MNI152 2009 T1 template at 1 mm (197 x 233 x 189, no network needed)
written as a NIfTI with an LPS affine; the model is an untrained UNet++-resnet18 bundle at
the given size (speed does not depend on the weights). It also times the normalization step
on the same volume.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default="/tmp/segment-bench")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    from msnb.bundle import save_bundle
    from msnb.models import build_model
    from msnb.normalize import build_reference, get_normalizer

    tpl = load_mni152_template(resolution=1)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    data = np.where(mask, np.asarray(tpl.dataobj, dtype=np.float32), 0)
    aff = tpl.affine.copy()
    lps = aff @ np.array(
        [[-1, 0, 0, data.shape[0] - 1], [0, -1, 0, data.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    flair = out / "mni_1mm_lps.nii.gz"
    nib.save(nib.Nifti1Image(data[::-1, ::-1], lps), str(flair))
    print(f"volume {data.shape}, {int(mask.sum())} brain voxels")

    norm = get_normalizer("quantile", build_reference([(data, mask)]))
    t = time.perf_counter()
    norm(data, mask)
    print(f"quantile normalization: {time.perf_counter() - t:.3f} s")

    bundle = out / f"bundle-{args.size}"
    save_bundle(
        bundle,
        build_model("unetplusplus", "resnet18"),
        architecture="unetplusplus",
        encoder="resnet18",
        size=args.size,
        normalizer=norm,
    )
    cmd = [
        sys.executable,
        "-m",
        "msnb.cli",
        "segment",
        str(flair),
        "--model",
        str(bundle),
        "--out",
        str(out / "seg"),
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"msnb segment end to end (process start included): {time.perf_counter() - t:.1f} s")

    from msnb.segment import segment_file

    res = segment_file(flair, bundle, out / "seg2")
    print(
        "in-process steps (s):",
        {k: round(v, 2) for k, v in res["steps"].items()},
        f"total {res['seconds']:.1f} s",
    )


if __name__ == "__main__":
    main()
