"""Study files: validation with messages naming the key, and expansion into jobs."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from msnb.paths import parameters_dir
from msnb.recipe import TrainConfig, model_id_for
from msnb.study import (
    TRAINING_DEFAULTS,
    TRAINING_KEYS,
    JobSpec,
    StudyError,
    expand_study,
    job_result,
    job_specs,
    load_study,
    run_job,
)
from msnb.study.jobs import read_job_record, write_job_record
from msnb.study.notebooks import KERNEL, kernel_manager_class


def write_study(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load((parameters_dir() / "quick.yaml").read_text())
    for key, value in changes.items():
        node = spec
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_quick_study_expands_to_each_configuration_once(tmp_path):
    study = load_study(parameters_dir() / "quick.yaml", out_root=tmp_path)
    trains, evals = expand_study(study)
    ids = [t.model_id for t in trains]
    assert len(ids) == len(set(ids))
    # 4 single + 4 combinations + labels (rater1 shared with single ISBI: +rater2, +union)
    # + 4 linear + 4 unet
    assert len(trains) == 4 + 4 + 2 + 4 + 4
    isbi = next(
        t for t in trains if t.model_id == "isbi2015__quantile__unetplusplus-resnet18__rater1"
    )
    assert set(isbi.experiments) == {"single", "labels"}
    assert "msseg2016_train+3dmrms__quantile__unetplusplus-resnet18__consensus" in ids
    assert "3dmrms__linear__unetplusplus-resnet18__consensus" in ids
    assert "3dmrms__quantile__unet-resnet18__consensus" in ids
    single_3d = [
        e.test_dataset
        for e in evals
        if e.model_id == "3dmrms__quantile__unetplusplus-resnet18__consensus"
    ]
    assert sorted(single_3d) == ["isbi2015", "msseg2016_test", "msseg2016_train"]
    # the rater2 model is tested on the labels experiment's test sets
    r2 = [e.test_dataset for e in evals if e.model_id.endswith("__rater2")]
    assert sorted(r2) == ["3dmrms", "msseg2016_test", "msseg2016_train"]
    specs = job_specs(study)
    assert [s.kind for s in specs[: len(trains)]] == ["train"] * len(trains)
    assert specs[0].output == tmp_path / "quick" / "train" / f"{trains[0].model_id}.ipynb"
    assert all(s.depends_on in ids for s in specs if s.kind == "eval")


def test_model_id_gets_a_hash_only_when_hidden_settings_change():
    base = {
        "normalization": "quantile",
        "architecture": "unetplusplus",
        "encoder": "resnet18",
        "label": "consensus",
        "size": 96,
    }
    assert model_id_for(["a", "b"], base, base) == "a+b__quantile__unetplusplus-resnet18__consensus"
    bigger = model_id_for(["a"], {**base, "size": 128}, base)
    assert bigger.startswith("a__quantile__") and bigger != model_id_for(["a"], base, base)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "no spaces"}, r"name: expected a simple name"),
        ({"training.epochs": "many"}, r"training.epochs: expected int"),
        ({"training.learning_rate": 0.1}, r"training.learning_rate: unknown training setting"),
        (
            {"datasets.3dmrms": {"phantom": "huge"}},
            r"datasets.3dmrms.phantom: unknown phantom preset 'huge'",
        ),
        (
            {"datasets.3dmrms": {"adapter": "nope", "root": "/x"}},
            r"datasets.3dmrms.adapter: unknown adapter",
        ),
        (
            {"experiments.single": ["isbi2015", "brats"]},
            r"experiments.single: unknown dataset 'brats'",
        ),
        (
            {"experiments.combinations": [{"train": ["isbi2015"]}]},
            r"experiments.combinations\[0\].test: expected a list of dataset names",
        ),
        (
            {"experiments.ablations": [{"name": "x", "change": {"normalisation": "linear"}}]},
            r"experiments.ablations\[0\].change.normalisation: unknown training setting",
        ),
        ({"experiments.transfer": ["isbi2015"]}, r"experiments.transfer: unknown experiment kind"),
        ({"datasets": None}, r"datasets: expected a non-empty mapping"),
        ({"training.architecture": "resnet"}, r"training.architecture: unknown architecture"),
        (
            {"experiments.labels": {"dataset": ["isbi2015", "3dmrms"]}},
            r"experiments.labels.dataset: expected one dataset",
        ),
        (
            {"experiments.ablations": [{"name": "x", "change": {"size": 32}, "of": "transfer"}]},
            r"experiments.ablations\[0\].of: expected some of single, combinations, labels",
        ),
    ],
)
def test_malformed_study_names_the_key(tmp_path, change, message):
    path = write_study(tmp_path, **change)
    with pytest.raises(StudyError, match=message) as info:
        load_study(path, out_root=tmp_path)
    assert str(path) in str(info.value)


def test_study_training_defaults_are_the_recipe():
    recipe = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert TRAINING_DEFAULTS == {key: recipe[key] for key in TRAINING_KEYS}


def test_architecture_aliases_share_a_model(tmp_path):
    path = write_study(tmp_path, **{"training.architecture": "UNet++"})
    trains, _ = expand_study(load_study(path, out_root=tmp_path))
    assert all(
        "__unetplusplus-resnet18__" in t.model_id for t in trains if "single" in t.experiments
    )


def test_job_records_mark_jobs_done(tmp_path):
    spec = JobSpec(
        "eval", "x", tmp_path / "x.ipynb", tmp_path / "o.ipynb", tmp_path / "x.job.json", {"a": 1}
    )
    assert not spec.is_done() and read_job_record(spec.record) == {}
    write_job_record(spec, seconds=1.5)
    assert spec.is_done() and read_job_record(spec.record)["parameters"] == {"a": 1}
    assert not JobSpec(**{**vars(spec), "parameters": {"a": 2}}).is_done()
    assert job_result(spec, "skipped", error="e") == {
        "name": "x",
        "kind": "eval",
        "status": "skipped",
        "seconds": 0.0,
        "error": "e",
        "notebook": str(tmp_path / "o.ipynb"),
    }


def test_paper_study_reads_real_dataset_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MSNB_DATA", str(tmp_path / "data"))
    study = load_study(parameters_dir() / "paper.yaml", out_root=tmp_path)
    assert study.datasets["msseg2016_test"] == {
        "adapter": "msseg2016_test",
        "root": str(tmp_path / "data" / "msseg2016"),
        "options": {},
    }
    assert study.training["size"] == 224 and study.training["epochs"] == 50


# --------------------------------------------------------------------------- end to end


def _tiny_study(tmp_path: Path, *, single_only: bool = False) -> Path:
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    if single_only:
        spec["experiments"].pop("ablations")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_tiny_study_end_to_end_then_resume(tmp_path):
    import pandas as pd

    from msnb.study import run_study

    study = load_study(_tiny_study(tmp_path), out_root=tmp_path / "out")
    trains, evals = expand_study(study)
    first_jobs = [trains[0].model_id, f"{trains[0].model_id}__{evals[0].test_dataset}"]
    # A study killed after its first training and evaluation ...
    partial = run_study(study, only=first_jobs, progress=False, statistics=False)
    assert [j["status"] for j in partial["jobs"]] == ["ok", "ok"]
    first = pd.read_csv(partial["results_csv"], dtype={"subject": str})
    assert set(first.model_id) == {trains[0].model_id}
    # ... re-run: only what is missing runs, and results are the same for the finished part.
    full = run_study(study, progress=False)
    assert full["skipped"] == 2 and not full["failed"]
    assert len(full["jobs"]) == len(trains) + len(evals) - 2
    results = pd.read_csv(full["results_csv"], dtype={"subject": str, "timepoint": str})
    assert not results.duplicated(["model_id", "test_dataset", "subject", "timepoint"]).any()
    assert set(results.model_id) == {t.model_id for t in trains}
    assert results.dice.between(0, 1).all() and (results.train_centers != "").all()
    again = results[results.model_id == trains[0].model_id].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        again[["subject", "dice", "iou"]], first[["subject", "dice", "iou"]]
    )
    assert (tmp_path / "out" / "tiny" / "statistics" / "metrics.json").exists()
    report = full["report"].read_text()
    assert "Figure 2" in report and "data:image/png;base64" in report
    assert f"train/{trains[0].model_id}.ipynb" in report
    # Annotation agreement runs on the dataset with several raters and lands in the report.
    assert [a["name"] for a in full["analyses"]] == ["statistics", "agreement-msseg2016_train"]
    assert all(a["status"] == "ok" for a in full["analyses"])
    assert "Annotation agreement: msseg2016_train" in report and "agreement/" in report
    out = tmp_path / "out" / "tiny"
    timings = json.loads((out / "timings.json").read_text())["seconds"]
    assert timings["total"] >= timings["grid"] > 0 and timings["train_jobs"] > 0
    # Unchanged parameters and results: nothing runs again, not even the statistics.
    stats_written = (out / "statistics.ipynb").stat().st_mtime_ns
    again_run = run_study(study, progress=False)
    assert again_run["jobs"] == [] and not again_run["failed"]
    assert (out / "statistics.ipynb").stat().st_mtime_ns == stats_written


@pytest.mark.slow
def test_failed_training_is_reported_and_its_evaluations_skipped(tmp_path, monkeypatch):
    from msnb.study import run_study

    monkeypatch.setenv("MSNB_DATA", str(tmp_path / "nothing"))
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    spec["datasets"]["3dmrms"] = {"adapter": "3dmrms", "root": str(tmp_path / "absent")}
    spec["experiments"] = {"single": ["msseg2016_train", "3dmrms"]}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = run_study(load_study(path, out_root=tmp_path / "out"), progress=False, statistics=False)
    failed = {r["name"]: r for r in out["failed"]}
    bad = "3dmrms__quantile__unetplusplus-resnet18__consensus"
    assert failed[bad]["status"] == "failed" and "absent" in failed[bad]["error"]
    assert Path(failed[bad]["notebook"]).exists()  # papermill keeps the failed notebook
    assert failed[f"{bad}__msseg2016_train"]["status"] == "skipped"
    assert any(r["status"] == "ok" for r in out["jobs"])


@pytest.mark.slow
def test_tiny_study_on_a_dask_local_cluster(tmp_path):
    import pandas as pd

    from msnb.study import run_study

    study = load_study(_tiny_study(tmp_path, single_only=True), out_root=tmp_path / "out")
    out = run_study(study, jobs=2, progress=False, statistics=False)
    assert not out["failed"] and len(out["jobs"]) == 4
    results = pd.read_csv(out["results_csv"])
    assert set(results.test_dataset) == {"msseg2016_train", "3dmrms"}


@pytest.mark.skipif(os.name != "posix", reason="ZeroMQ IPC needs Unix sockets")
def test_job_kernel_talks_over_unix_sockets_and_removes_them(tmp_path, capfd):
    import nbformat

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("value = 1  # parameter", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(
                "from ipykernel.kernelapp import IPKernelApp\n"
                "print(IPKernelApp.instance().transport, value + 1)"
            ),
        ]
    )
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "msnb", "language": "python"}
    src = tmp_path / "probe.ipynb"
    nbformat.write(nb, src)
    before = set(Path(tempfile.gettempdir()).glob("msnb-kernel-*"))
    spec = JobSpec(
        kind="eval",
        name="probe",
        notebook=src,
        output=tmp_path / "out" / "probe.ipynb",
        record=tmp_path / "out" / "probe.job.json",
        parameters={"value": 41},
    )
    result = run_job(spec)
    assert result["status"] == "ok", result
    out = nbformat.read(spec.output, 4)
    assert out.cells[-1].outputs[0]["text"].strip() == "ipc 42"
    err = capfd.readouterr().err
    assert "without encryption" not in err and "KeyboardInterrupt" not in err
    assert set(Path(tempfile.gettempdir()).glob("msnb-kernel-*")) == before
    assert spec.is_done()


def test_study_kernels_are_not_interrupted_on_shutdown():
    import asyncio

    km = kernel_manager_class()(kernel_name=KERNEL)
    # outside a shutdown the interrupt is jupyter_client's: no kernel here, so it refuses
    with pytest.raises(RuntimeError, match="No kernel is running"):
        asyncio.run(km._async_interrupt_kernel())
    km.shutting_down = True  # set by jupyter_client just before it would send SIGINT
    asyncio.run(km._async_interrupt_kernel())
    assert kernel_manager_class() is kernel_manager_class()
