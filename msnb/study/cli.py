"""``msnb study FILE``: run a study grid from the command line (see :func:`run_study`)."""

from __future__ import annotations

import argparse

from msnb.study.run import run_study

__all__ = ["register_cli"]


def register_cli(sub) -> None:
    """Add the ``study`` subcommand to ``sub`` (the ``msnb`` subparsers)."""
    p = sub.add_parser("study", help="run a study grid (papermill over dataset pairs)")
    p.add_argument("file", help="study YAML file, e.g. parameters/quick.yaml")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="jobs at once (each notebook in its own kernel; no network port)",
    )
    p.add_argument(
        "--scheduler", help="address of your Dask distributed scheduler (e.g. tcp://head-node:8786)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print each job's state (done, stale, todo) and the work left; run nothing",
    )
    p.set_defaults(func=_cli_study)


def _cli_study(args: argparse.Namespace) -> int:
    out = run_study(args.file, jobs=args.jobs, scheduler=args.scheduler, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    ran = sum(r["status"] != "skipped" for r in out["jobs"])
    failed = sum(r["status"] != "skipped" for r in out["failed"])
    line = f"{ran} jobs run, {out['skipped']} already done, {failed} failed"
    not_run = len(out["failed"]) - failed
    if not_run:
        line += f", {not_run} skipped (their training failed)"
    print(line)
    if out["results_csv"]:
        print(f"results: {out['results_csv']}")
    if out.get("report"):
        print(f"report: {out['report']}")
    return 1 if out["failed"] else 0
