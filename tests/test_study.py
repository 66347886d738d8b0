"""Study files: validation with messages naming the key, and expansion into jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from msnb.paths import parameters_dir
from msnb.study import StudyError, expand_study, job_specs, load_study, model_id_for


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
            r"datasets.3dmrms.phantom: unknown preset 'huge'",
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
    ],
)
def test_malformed_study_names_the_key(tmp_path, change, message):
    path = write_study(tmp_path, **change)
    with pytest.raises(StudyError, match=message) as info:
        load_study(path, out_root=tmp_path)
    assert str(path) in str(info.value)


def test_paper_study_reads_real_dataset_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MSNB_DATA", str(tmp_path / "data"))
    study = load_study(parameters_dir() / "paper.yaml", out_root=tmp_path)
    assert study.datasets["msseg2016_test"] == {
        "adapter": "msseg2016_test",
        "root": str(tmp_path / "data" / "msseg2016"),
        "options": {},
    }
    assert study.training["size"] == 224 and study.training["epochs"] == 50
