"""Where the time of one training notebook and one evaluation notebook of a study goes.

Usage::

    MSNB_OUTPUTS=/tmp/overhead .venv/bin/python benchmarks/job_overhead.py parameters/quick.yaml \
        [--model msseg2016_train__quantile__unetplusplus-resnet18__consensus] [--test 3dmrms]

Runs the study's own papermill jobs for one model (its training, then its evaluation on one
test set) exactly as ``msnb study`` would, one thread each (``OMP_NUM_THREADS=1``, a study
worker's share with ``--jobs 2`` on 2 cores), into a fresh folder under ``MSNB_OUTPUTS``. The
training runs twice: first with an empty slice cache (the first model of its data in a
study), then with the cache the first run filled (every later model of the same data and
normalization). It prints, per notebook, the seconds of each stage and its share of the
notebook's wall time:

* kernel start, shutdown and papermill: the wall time minus the cells' time;
* each code cell (papermill's per-cell durations), by its first line;
* inside the training cell, :attr:`msnb.train.TrainResult.timings` (data preparation, model
  construction, optimizer steps, validation); inside the evaluation cell, the per-scan stage
  seconds of :func:`msnb.predict.evaluate_scans` summed over scans.

"Work" is the optimizer steps and forward passes (training steps, validation, inference);
"overhead" is everything else, the quantity the quick study's budget cares about.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from msnb.paths import outputs_root
from msnb.records import read_table
from msnb.sources import resolve_datasets
from msnb.study import job_specs, load_study
from msnb.study.jobs import JobSpec
from msnb.study.notebooks import execute_notebook


def run(spec: JobSpec, out: Path) -> tuple[float, dict, Path]:
    """Execute one job's notebook into ``out``; (wall seconds, parameters used, notebook)."""
    parameters = dict(spec.parameters)
    path = out / f"{spec.kind}-{spec.name}.ipynb"
    t0 = time.perf_counter()
    execute_notebook(spec.notebook, path, parameters)
    return time.perf_counter() - t0, parameters, path


def cell_times(notebook: Path) -> list[tuple[str, float]]:
    """(first line, seconds) of each code cell of an executed notebook."""
    nb = json.loads(notebook.read_text())
    rows = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        first = "".join(cell["source"]).strip().splitlines()[0][:60]
        rows.append((first, float(cell["metadata"].get("papermill", {}).get("duration") or 0)))
    return rows


def breakdown(wall: float, cells: list[tuple[str, float]], inner: dict, inner_cell: str):
    """Rows (stage, seconds, share of wall, work?) of one notebook."""
    rows = [("kernel start/shutdown, papermill", wall - sum(s for _, s in cells), False)]
    for first, seconds in cells:
        if first.startswith(inner_cell):
            rows.append((f"cell: {first}", seconds, False))
            rows += [(f"  {k}", v, k in WORK) for k, v in inner.items()]
            rows.append(("  rest of the cell", seconds - sum(inner.values()), False))
        else:
            rows.append((f"cell: {first}", seconds, False))
    return rows


WORK = {"train_steps", "validation", "infer"}


def show(title: str, wall: float, rows) -> None:
    work = sum(s for name, s, w in rows if w)
    print(f"\n### {title}: {wall:.1f} s wall, work {work:.1f} s, overhead {wall - work:.1f} s "
          f"({(wall - work) / wall:.0%})\n")  # fmt: skip
    print("| stage | seconds | share |\n|---|---:|---:|")
    for name, seconds, _ in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / wall:.0%} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument(
        "--model", default="msseg2016_train__quantile__unetplusplus-resnet18__consensus"
    )
    ap.add_argument("--test", default="3dmrms")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = outputs_root() / "job_overhead"
    shutil.rmtree(root, ignore_errors=True)
    study = load_study(args.study, out_root=root)
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    specs = {s.name: s for s in job_specs(study, datasets)}
    train, evaluation = specs[args.model], specs[f"{args.model}__{args.test}"]
    out = root / "notebooks"
    out.mkdir(parents=True)
    for attempt in ("empty slice cache", "warm slice cache"):
        if attempt == "empty slice cache":
            shutil.rmtree(outputs_root() / "cache", ignore_errors=True)
        wall, _, nb = run(train, out)
        info = json.loads(
            (Path(train.parameters["out_dir"]) / args.model / "bundle.json").read_text()
        )
        timings = {k.removeprefix("seconds_"): v for k, v in info["training"].items()
                   if k.startswith("seconds_")}  # fmt: skip
        show(f"training, {attempt}", wall, breakdown(wall, cell_times(nb), timings, "result ="))
    wall, _, nb = run(evaluation, out)
    scans = read_table(evaluation.parameters["out_dir"], "scans")
    stages = {c.removeprefix("seconds_"): float(scans[c].sum()) for c in scans
              if c.startswith("seconds_")}  # fmt: skip
    show(
        f"evaluation on {len(scans)} scans", wall, breakdown(wall, cell_times(nb), stages, "table,")
    )


if __name__ == "__main__":
    main()
