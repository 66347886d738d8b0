"""Notebooks 05 (annotation agreement) and 06 (statistics) run end to end under papermill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _run(name: str, out: Path, parameters: dict) -> None:
    import papermill as pm

    pm.execute_notebook(
        str(NOTEBOOKS / name),
        str(out),
        parameters=parameters,
        kernel_name="msnb",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )


@pytest.mark.slow
def test_statistics_notebook_builds_tables_from_results(tmp_path):
    from test_stats import make_results

    csv = tmp_path / "study" / "results.csv"
    csv.parent.mkdir()
    make_results(seed=1).to_csv(csv, index=False)
    _run("06_statistics.ipynb", tmp_path / "06.ipynb", {"results_csv": str(csv)})
    out = csv.parent / "statistics"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train_test_cells"] == 12 and metrics["n_tests_ok"] > 10
    for name in ("train_test.csv", "table2_dice.md", "table5_labels.md", "centers.md"):
        assert (out / name).exists(), name


@pytest.mark.slow
def test_statistics_notebook_without_results_says_so(tmp_path):
    out = tmp_path / "stats"
    _run(
        "06_statistics.ipynb",
        tmp_path / "06.ipynb",
        {"results_csv": str(tmp_path / "none.csv"), "out_dir": str(out)},
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_tests_ok"] == 0
    assert all(t["status"].startswith("not enough data") for t in metrics["tests"])


@pytest.mark.slow
def test_agreement_notebook_on_tiny_raters(msseg_root, tmp_path):
    from test_stats import make_results

    csv = tmp_path / "results.csv"
    make_results().to_csv(csv, index=False)
    out = tmp_path / "agreement"
    params = {
        "data_root": str(msseg_root),
        "dataset": "msseg2016_train",
        "results_csv": str(csv),
        "out_dir": str(out),
    }
    _run("05_annotation_agreement.ipynb", tmp_path / "05.ipynb", params)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "msseg2016_train" and metrics["n_scans"] == 4
    kinds = {r["kind"] for r in metrics["summary"]}
    assert kinds == {"rater_vs_consensus", "rater_vs_rater"}
    assert any(r["test"] == "rm_anova" for r in metrics["label_tests"])
    assert (out / "consensus.csv").exists()


@pytest.mark.slow
def test_agreement_notebook_on_phantom_defaults(tmp_path):
    pytest.importorskip("msnb.phantom")
    out = tmp_path / "agreement"
    _run("05_annotation_agreement.ipynb", tmp_path / "05.ipynb", {"out_dir": str(out)})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_scans"] > 0 and metrics["summary"]
    assert metrics["n_truth"] == metrics["n_scans"]  # the phantom's hidden truth was found
