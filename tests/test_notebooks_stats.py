"""Notebooks 05 (annotation agreement) and 06 (statistics) run end to end under papermill."""

from __future__ import annotations

import pytest
from test_stats import make_results

from msnb.records import read_metrics


@pytest.mark.slow
def test_statistics_notebook_builds_tables_from_results(tmp_path, run_notebook):
    csv = tmp_path / "study" / "results.csv"
    csv.parent.mkdir()
    make_results(seed=1).to_csv(csv, index=False)
    run_notebook("06_statistics", results_csv=str(csv))
    out = csv.parent / "statistics"
    record = read_metrics(out)
    assert record["kind"] == "statistics"
    metrics = record["metrics"]
    assert metrics["n_train_test_cells"] == 12 and metrics["n_tests_ok"] > 10
    assert len(record["tables"]["tests"]) == metrics["n_tests"]
    for name in ("train_test.csv", "table2_dice.md", "table5_labels.md", "centers.md"):
        assert (out / name).exists(), name


@pytest.mark.slow
def test_statistics_notebook_without_results_says_so(tmp_path, run_notebook):
    out = tmp_path / "stats"
    run_notebook("06_statistics", results_csv=str(tmp_path / "none.csv"), out_dir=str(out))
    record = read_metrics(out)
    assert record["metrics"]["n_tests_ok"] == 0 and record["tables"]["tests"]
    assert all(t["status"].startswith("not enough data") for t in record["tables"]["tests"])


@pytest.mark.slow
def test_agreement_notebook_on_tiny_raters(msseg_root, tmp_path, run_notebook):
    csv = tmp_path / "results.csv"
    make_results().to_csv(csv, index=False)
    out = tmp_path / "agreement"
    run_notebook(
        "05_annotation_agreement",
        data_root=str(msseg_root),
        dataset="msseg2016_train",
        results_csv=str(csv),
        out_dir=str(out),
    )
    record = read_metrics(out)
    assert record["kind"] == "agreement"
    metrics, tables = record["metrics"], record["tables"]
    assert metrics["dataset"] == "msseg2016_train" and metrics["n_scans"] == 4
    kinds = {r["kind"] for r in tables["summary"]}
    assert kinds == {"rater_vs_consensus", "rater_vs_rater"}
    assert any(r["test"] == "rm_anova" for r in tables["label_tests"])
    assert (out / "consensus.csv").exists()


@pytest.mark.slow
def test_agreement_notebook_on_phantom_defaults(tmp_path, run_notebook):
    out = tmp_path / "agreement"
    run_notebook("05_annotation_agreement", out_dir=str(out))
    record = read_metrics(out)
    metrics = record["metrics"]
    assert metrics["n_scans"] > 0 and record["tables"]["summary"]
    assert metrics["n_truth"] == metrics["n_scans"]  # the phantom's hidden truth was found
