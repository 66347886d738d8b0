"""Study files: validation with messages naming the key, and expansion into jobs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from test_report import check_report_page

from msnb.paths import REPO_ROOT, outputs_root, parameters_dir
from msnb.recipe import TrainConfig, model_id_for
from msnb.sources import resolve_datasets
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
from msnb.study.spec import SET_ONLY_KEYS


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


ISBI_SINGLE = "isbi2015__quantile__unetplusplus-resnet18__union"


def test_quick_study_expands_to_each_configuration_once(tmp_path):
    study = load_study(parameters_dir() / "quick.yaml", out_root=tmp_path)
    trains, evals = expand_study(study)
    ids = [t.model_id for t in trains]
    assert len(ids) == len(set(ids))
    # 4 single x 3 seeds + 4 combinations + labels (union shared with single ISBI seed 0:
    # +rater1, +rater2) + 8 linear + 8 unet (of single and combinations) + 4 with the
    # per-model reference, all but the single models with one seed
    assert len(trains) == 4 * 3 + 4 + 2 + 8 + 8 + 4
    assert len(evals) == 12 * 3 + 7 + 6 + 19 + 19 + 12
    seeds = [t.settings["seed"] for t in trains if "single" in t.experiments]
    assert sorted(seeds) == [0] * 4 + [1] * 4 + [2] * 4
    assert all(t.settings["seed"] == 0 for t in trains if "single" not in t.experiments)
    isbi = next(t for t in trains if t.model_id == ISBI_SINGLE)
    assert set(isbi.experiments) == {"single", "labels"}
    assert "msseg2016_train+3dmrms__quantile__unetplusplus-resnet18__consensus" in ids
    assert "isbi2015+3dmrms__linear__unetplusplus-resnet18__consensus" in ids
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
    # every model but the ablation's own reference normalizes onto the one template
    own = {t.model_id for t in trains if t.experiments == ("ablation:own_reference",)}
    assert len(own) == 4
    for s in specs[: len(trains)]:
        if s.name in own:
            assert "normalization_reference" not in s.parameters and "template" not in s.parameters
        else:
            assert s.parameters["normalization_reference"] == "template"
            assert s.parameters["template"] == "?msseg2016_train/08_01/01"
            # pooled-Dice checkpoints (msnb's default, so the notebook is not told)
            assert "selection_metric" not in s.parameters
    assert study.training["selection_metric"] == "pooled_dice"
    assert study.training["epochs"] == 6 and study.training["foreground_fraction"] == 0.5


def test_paper_study_is_the_papers_grid(tmp_path):
    study = load_study(parameters_dir() / "paper.yaml", out_root=tmp_path)
    trains, evals = expand_study(study)
    assert len(trains) == 26 and len(evals) == 63
    models = [(["isbi2015"], "union")] + [
        ([d], "consensus") for d in ("msseg2016_train", "msseg2016_test", "3dmrms")
    ]
    models += [
        (["msseg2016_train", "3dmrms"], "consensus"),
        (["isbi2015", "msseg2016_train"], "consensus"),
        (["isbi2015", "3dmrms"], "consensus"),
        (["msseg2016_train", "3dmrms", "isbi2015"], "consensus"),
    ]
    variants = [("quantile", "unetplusplus"), ("linear", "unetplusplus"), ("quantile", "unet")]
    expected = {(tuple(d), label, *v) for d, label in models for v in variants}
    expected |= {(("isbi2015",), r, "quantile", "unetplusplus") for r in ("rater1", "rater2")}
    got = [
        (
            t.train_datasets,
            t.settings["label"],
            t.settings["normalization"],
            t.settings["architecture"],
        )
        for t in trains
    ]
    assert len(got) == len(set(got)) and set(got) == expected
    # the labels experiment's union model is the ISBI single model: one job for both
    (isbi,) = [
        t
        for t in trains
        if t.train_datasets == ("isbi2015",)
        and t.settings["label"] == "union"
        and t.settings["normalization"] == "quantile"
        and t.settings["architecture"] == "unetplusplus"
    ]
    assert isbi.model_id == ISBI_SINGLE and set(isbi.experiments) == {"single", "labels"}
    per_experiment = {
        tag: sum(tag in e.experiments for e in evals)
        for tag in ("single", "combinations", "labels", "ablation:linear", "ablation:unet")
    }
    assert per_experiment == {
        "single": 12,
        "combinations": 7,
        "labels": 9,  # 3 of them shared with single: the union model
        "ablation:linear": 19,
        "ablation:unet": 19,
    }
    specs = [s for s in job_specs(study) if s.kind == "train"]
    paper = {
        "encoder_weights": "imagenet",
        "lr_step_epochs": 20,
        "autocast": "none",
        "selection_metric": "mean_slice_dice",
        "normalization_reference": "template",
        "template": "?msseg2016_train/08_03/01",
        "slice_crop": "none",
        "min_brain_fraction": 0.0,
    }
    assert all(s.parameters.items() >= paper.items() for s in specs)
    assert all(s.parameters.get("lr_gamma", 0.5) == 0.5 for s in specs)
    assert study.datasets["3dmrms"]["n4"] and "n4" not in study.datasets["isbi2015"]


def test_standard_study_is_the_paper_grid_with_three_seeds_but_the_ablations(tmp_path):
    from msnb.phantom.config import make_config
    from msnb.phantom.layout import scan_tasks

    study = load_study(parameters_dir() / "standard.yaml", out_root=tmp_path)
    trains, evals = expand_study(study)
    # 3 x (4 single + 4 combinations + rater1 + rater2) + 8 linear + 8 unet at seed 0
    assert len(trains) == 3 * (4 + 4 + 2) + 8 + 8 and len(evals) == 3 * (12 + 7 + 6) + 19 + 19
    for t in trains:
        ablated = t.settings["normalization"] == "linear" or t.settings["architecture"] == "unet"
        assert (t.settings["seed"] == 0) if ablated else t.settings["seed"] in (0, 1, 2)
    assert all(spec["phantom"] == "standard" for spec in study.datasets.values())
    assert not any(t.settings["normalization_reference"] == "training" for t in trains)
    # the paper's template patient exists in the standard phantom
    subject = study.training["template"].split("/")[1]
    scans = {(t.dataset, t.subject) for t in scan_tasks(make_config("standard"), 0)}
    assert ("msseg2016_train", subject) in scans and subject == "08_03"
    # the header's counts are the expansion's
    header = (parameters_dir() / "standard.yaml").read_text().split("name:")[0]
    assert f"{len(trains)} trainings and {len(evals)} evaluations" in header.replace("\n# ", " ")


def test_replicates_are_their_own_jobs_and_the_first_seed_keeps_its_id(tmp_path):
    quick = yaml.safe_load((parameters_dir() / "quick.yaml").read_text())["experiments"]
    path = write_study(
        tmp_path,
        **{
            "training.seeds": None,
            "training.replicates": 3,
            "experiments.combinations": [  # the study's replicates
                {k: v for k, v in c.items() if k != "seeds"} for c in quick["combinations"]
            ],
            "experiments.labels.seeds": [0, 5],
            "experiments.ablations": [
                {"name": "linear", "change": {"normalization": "linear"}, "seeds": [0]}
            ],
        },
    )
    study = load_study(path, out_root=tmp_path)
    assert study.seeds == [0, 1, 2] and study.training["seed"] == 0
    trains, evals = expand_study(study)
    seeds = {t.model_id: t.settings["seed"] for t in trains}
    assert len(seeds) == len(trains)
    # single and combinations: 3 seeds each; labels: seeds 0 and 5, its union model shared
    # with the single ISBI model for seed 0; the linear ablation of single: seed 0 only
    assert sorted(s for m, s in seeds.items() if m.startswith(ISBI_SINGLE)) == [0, 1, 2, 5]
    assert f"{ISBI_SINGLE}__seed5" in seeds and ISBI_SINGLE in seeds
    assert f"{ISBI_SINGLE}__seed1" in seeds and f"{ISBI_SINGLE}__seed0" not in seeds
    rater1 = [m for m in seeds if m.startswith("isbi2015__quantile__unetplusplus-resnet18__rater1")]
    assert sorted(seeds[m] for m in rater1) == [0, 5]
    linear = [m for m, s in seeds.items() if "__linear__" in m]
    assert len(linear) == 4 and all(seeds[m] == 0 for m in linear)
    assert len(trains) == 4 * 3 + 4 * 3 + 2 * 2 + 1 + 4
    # every replicate is tested on its experiment's test sets, and each job gets its seed
    assert len(evals) == (12 + 7) * 3 + 9 * 2 - 3 + 12  # union seed 0 is single ISBI seed 0
    specs = {s.name: s for s in job_specs(study) if s.kind == "train"}
    assert specs[f"{ISBI_SINGLE}__seed2"].parameters["seed"] == 2
    # the one-seed study's models are the first seed's: adding replicates retrains nothing
    (tmp_path / "one").mkdir()
    one_seed = write_study(tmp_path / "one", **{"training.seeds": None})
    plain, _ = expand_study(load_study(one_seed, out_root=tmp_path))
    main = {t.model_id for t in plain if not all(e.startswith("ablation:") for e in t.experiments)}
    assert len(main) == 10 and main <= set(seeds)


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
        ({"training.lr_step_epochs": 0}, r"training.lr_step_epochs: expected at least 1"),
        ({"training.lr_step_epochs": 2.5}, r"training.lr_step_epochs: expected int/null"),
        ({"training.lr_gamma": 0}, r"training.lr_gamma: expected a factor in \(0, 1\]"),
        (
            {"training.selection_metric": "dice"},
            r"training.selection_metric: expected one of pooled_dice, mean_slice_dice, got 'dice'",
        ),
        (
            {"training.normalization_reference": "atlas"},
            r"training.normalization_reference: expected one of training, template",
        ),
        ({"training.slice_crop": "box"}, r"training.slice_crop: expected one of brain, none"),
        ({"training.min_brain_fraction": 1.5}, r"training.min_brain_fraction: expected a fraction"),
        (
            {"training.autocast": "fp64"},
            r"training.autocast: expected one of bf16, fp16, none",
        ),
        (
            {"training.autocast": "auto"},
            r"training.autocast: a study declares its precision: none \(float32\), bf16",
        ),
        ({"training.seeds": []}, r"training.seeds: expected a non-empty list of integers"),
        ({"training.seeds": [0, "1"]}, r"training.seeds: expected a non-empty list of integers"),
        ({"training.seeds": [1, 1]}, r"training.seeds: a seed is repeated"),
        (
            {"training.seed": 0, "training.seeds": [1, 2]},
            r"training.seed: seeds starts at 1: leave seed out",
        ),
        (
            {"training.seeds": None, "training.replicates": 0},
            r"training.replicates: expected at least 1, got 0",
        ),
        ({"training.foreground_fraction": 2}, r"training.foreground_fraction: expected a share"),
        (
            {"training.replicates": 2, "training.seeds": [0, 1]},
            r"training.replicates: give either seeds or replicates, not both",
        ),
        (
            {"experiments.labels.seeds": None, "experiments.labels.replicates": "3"},
            r"experiments.labels.replicates: expected int",
        ),
        (
            {"experiments.combinations": [{"train": ["3dmrms"], "test": ["isbi2015"], "n": 2}]},
            r"experiments.combinations\[0\]: expected a mapping with 'train', 'test'",
        ),
        ({"training.template": None}, r"training.normalization_reference: 'template' needs"),
        ({"training.template": "08_01"}, r"training.template: expected dict/null"),
        (
            {"training.template": {"dataset": "brats", "subject": "01"}},
            r"training.template.dataset: expected one of the study's datasets",
        ),
        (
            {"training.template": {"dataset": "msseg2016_train", "subject": 801}},
            r"training.template.subject: expected a quoted id",
        ),
        (
            {"training.template": {"dataset": "3dmrms", "subject": "01", "center": "x"}},
            r"training.template.center: unknown key",
        ),
        (
            {
                "training.normalization_reference": None,
                "training.template": None,
                "experiments.ablations": [
                    {"name": "t", "change": {"normalization_reference": "template"}}
                ],
            },
            r"experiments.ablations\[0\].change.normalization_reference: 'template' needs",
        ),
        (
            {"datasets.3dmrms": {"phantom": "quick", "n4": "yes"}},
            r"datasets.3dmrms.n4: expected true or false",
        ),
        (
            {"datasets.3dmrms": {"adapter": "3dmrms", "root": "/x", "n_4": True}},
            r"datasets.3dmrms.n_4: unknown key for a dataset folder",
        ),
    ],
)
def test_malformed_study_names_the_key(tmp_path, change, message):
    path = write_study(tmp_path, **change)
    with pytest.raises(StudyError, match=message) as info:
        load_study(path, out_root=tmp_path)
    assert str(path) in str(info.value)


# The dry-run digests of tiny.yaml's jobs (out_root /tmp/digest_out, where nothing is written):
# a study that does not use the recipe settings added since (issue 11) keeps them, so its
# finished jobs stay done. They changed once, in issue 16: every training declares its
# precision (autocast "none"; they ran in "auto" before), and every evaluation's record covers
# its model's training job.
# sha256 of each job's papermill parameters (its digest also covers its notebook, the msnb
# version and its inputs: tests/test_job_identity.py)
TINY_PARAMETERS = {
    "msseg2016_train__quantile__unetplusplus-resnet18__consensus": "2e9e7cc9",
    "3dmrms__quantile__unetplusplus-resnet18__consensus": "707be818",
    "msseg2016_train__linear__unetplusplus-resnet18__consensus": "2e5f8c35",
    "3dmrms__linear__unetplusplus-resnet18__consensus": "71765cc3",
    "msseg2016_train__quantile__unetplusplus-resnet18__consensus__3dmrms": "0995dd86",
    "3dmrms__quantile__unetplusplus-resnet18__consensus__msseg2016_train": "2c7176df",
    "msseg2016_train__linear__unetplusplus-resnet18__consensus__3dmrms": "989115d8",
    "3dmrms__linear__unetplusplus-resnet18__consensus__msseg2016_train": "5eb5eeda",
}


def test_studies_without_the_new_settings_keep_their_parameters():
    study = load_study(parameters_dir() / "tiny.yaml", out_root=Path("/tmp/digest_out"))
    specs = job_specs(study)
    blobs = {s.name: json.dumps(s.parameters, sort_keys=True).encode() for s in specs}
    assert {n: hashlib.sha256(b).hexdigest()[:8] for n, b in blobs.items()} == TINY_PARAMETERS
    assert not any(k in s.parameters for s in specs for k in SET_ONLY_KEYS)
    assert all(s.parameters["autocast"] == "none" for s in specs if s.kind == "train")


def _template_study(tmp_path: Path, msseg_root: Path, mrms_root: Path, subject: str) -> Path:
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    spec["datasets"] = {
        "msseg2016_train": {"adapter": "msseg2016_train", "root": str(msseg_root)},
        "3dmrms": {"adapter": "3dmrms", "root": str(mrms_root), "n4": True},
    }
    spec["training"]["normalization_reference"] = "template"
    spec["training"]["template"] = {"dataset": "msseg2016_train", "subject": subject}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_model_trained_again_is_evaluated_again(tmp_path):
    """A setting outside the model id (epochs) retrains every model under the same id and
    bundle path; its evaluations' parameters are the same, but their records cover the
    training's digest, so they run again instead of keeping the old model's results."""
    before = {s.name: s for s in job_specs(load_study(parameters_dir() / "tiny.yaml"))}
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    spec["training"]["epochs"] = 2
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    after = {s.name: s for s in job_specs(load_study(path))}
    assert before.keys() == after.keys()  # same ids, same bundle paths
    evals = [n for n, s in before.items() if s.kind == "eval"]
    assert len(evals) == 4 and all(after[n].parameters == before[n].parameters for n in evals)
    assert all(after[n].digest != before[n].digest for n in before)


def test_template_scan_and_n4_reach_the_training_jobs(tmp_path, msseg_root, mrms_root):
    study = load_study(_template_study(tmp_path, msseg_root, mrms_root, "08_01"), out_root=tmp_path)
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    trains = [s for s in job_specs(study, datasets) if s.kind == "train"]
    patient = msseg_root / "Training" / "Center_08" / "Patient_01"
    for s in trains:
        p = s.parameters
        assert p["template"] == str(patient / "Preprocessed_Data" / "FLAIR_preprocessed.nii.gz")
        assert p["template_brain_mask"] == str(patient / "Masks" / "Brain_Mask.nii.gz")
        config = TrainConfig.from_parameters(p)  # what 03_train builds from them
        assert config.normalization_reference == "template" and config.template == p["template"]
        if "3dmrms" in p["train_datasets"]:
            assert p["dataset_specs"]["3dmrms"]["n4"] is True
        else:
            assert "n4" not in p["dataset_specs"]["msseg2016_train"]
    # the same template file for every model (the paper's one reference)
    assert len({s.parameters["template"] for s in trains}) == 1 and len(trains) == 4


def test_missing_template_scan_names_it(tmp_path, msseg_root, mrms_root):
    study = load_study(_template_study(tmp_path, msseg_root, mrms_root, "08_03"), out_root=tmp_path)
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    match = r"template\.yaml:\d+: training\.template: .*'msseg2016_train'"  # with its line
    with pytest.raises(StudyError, match=match) as info:
        job_specs(study, datasets)
    assert "'08_03'" in str(info.value) and "01_01" in str(info.value)
    assert job_specs(study)[0].parameters["template"] == "?msseg2016_train/08_03/01"  # dry run


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


def _tiny_study(tmp_path: Path, *, single_only: bool = False, seeds: list | None = None) -> Path:
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    if single_only:
        spec["experiments"].pop("ablations")
    if seeds:  # replicates of the single models; the ablation keeps the first seed only
        spec["training"].pop("seed")
        spec["training"]["seeds"] = seeds
        for ablation in spec["experiments"].get("ablations", []):
            ablation["seeds"] = seeds[:1]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_tiny_study_end_to_end_then_resume(tmp_path):
    import numpy as np
    import pandas as pd

    from msnb.study import run_study

    study = load_study(_tiny_study(tmp_path, seeds=[0, 1]), out_root=tmp_path / "out")
    trains, evals = expand_study(study)
    assert len(trains) == 2 * 2 + 2 and len(evals) == 6
    first_jobs = [trains[0].model_id, f"{trains[0].model_id}__{evals[0].test_dataset}"]
    # A study killed after its first training and evaluation ...
    partial = run_study(study, only=first_jobs, progress=False, statistics=False)
    assert [j["status"] for j in partial["jobs"]] == ["ok", "ok"]
    first = pd.read_csv(partial["results_csv"], dtype={"subject": str})
    assert set(first.model_id) == {trains[0].model_id}
    # ... re-run, two notebooks at once (`--jobs 2`): only what is missing runs, and results
    # are the same for the finished part.
    full = run_study(study, jobs=2, progress=False)
    assert full["skipped"] == 2 and not full["failed"]
    assert len(full["jobs"]) == len(trains) + len(evals) - 2
    results = pd.read_csv(full["results_csv"], dtype={"subject": str, "timepoint": str})
    assert not results.duplicated(["model_id", "test_dataset", "subject", "timepoint"]).any()
    assert set(results.model_id) == {t.model_id for t in trains}
    assert results.dice.between(0, 1).all() and (results.train_centers != "").all()
    # each replicate's rows carry its seed (from its bundle) and the declared precision
    seeds = results.groupby("model_id")["seed"].agg(set).map(lambda s: s.pop()).to_dict()
    assert seeds == {t.model_id: t.settings["seed"] for t in trains}
    assert (results.precision == "none").all()
    again = results[results.model_id == trains[0].model_id].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        again[["subject", "dice", "iou"]], first[["subject", "dice", "iou"]]
    )
    # Table 2's cells: mean of the two seeds' cell means, with their seed-to-seed SD
    cells = pd.read_csv(tmp_path / "out" / "tiny" / "statistics" / "train_test.csv")
    cells = cells[cells.metric == "dice"].set_index(["train_datasets", "test_dataset"])
    single = results[results.experiment.str.contains("single")]
    per_seed = single.groupby(["train_datasets", "test_dataset", "seed"]).dice.mean()
    by_cell = per_seed.groupby(["train_datasets", "test_dataset"])
    assert (cells.n_seeds == 2).all() and len(cells) == 2
    np.testing.assert_allclose(cells["mean"], by_cell.mean().loc[cells.index])
    np.testing.assert_allclose(cells["sd_seeds"], by_cell.std(ddof=1).loc[cells.index])
    report = full["report"].read_text()
    assert "Figure 2" in report and "data:image/png;base64" in report
    assert f"train/{trains[0].model_id}.html" in report
    # Annotation agreement runs on the dataset with several raters and lands in the report.
    assert [a["name"] for a in full["analyses"]] == ["statistics", "agreement-msseg2016_train"]
    assert all(a["status"] == "ok" for a in full["analyses"])
    assert "Rater agreement: MSSEG-2016 train" in report and "agreement/" in report
    # What a reader sees, in headless Chromium (no paths, full ids, every figure, viewers).
    forbidden = [tmp_path, REPO_ROOT, outputs_root()]
    check_report_page(full["report"], results, forbidden, tmp_path / "report.png")
    out = tmp_path / "out" / "tiny"
    timings = json.loads((out / "timings.json").read_text())["seconds"]
    assert timings["total"] >= timings["grid"] > 0 and timings["train_jobs"] > 0
    # Unchanged parameters and results: nothing runs again, not even the statistics.
    stats_written = (out / "statistics.ipynb").stat().st_mtime_ns
    again_run = run_study(study, progress=False)
    assert again_run["jobs"] == [] and not again_run["failed"]
    assert (out / "statistics.ipynb").stat().st_mtime_ns == stats_written


@pytest.mark.slow
def test_paper_settings_run_through_the_notebooks(tmp_path):
    """paper.yaml's recipe settings (but ImageNet weights) on the tiny phantom, N4 on 3D-MR-MS."""
    from msnb.study import run_study

    paper = yaml.safe_load((parameters_dir() / "paper.yaml").read_text())["training"]
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    keys = ("lr_step_epochs", "autocast", "selection_metric", "normalization_reference")
    spec["training"].update({k: paper[k] for k in (*keys, "slice_crop", "min_brain_fraction")})
    spec["training"]["template"] = {"dataset": "msseg2016_train", "subject": "08_01"}
    spec["datasets"]["3dmrms"]["n4"] = True
    spec["experiments"] = {"single": ["msseg2016_train", "3dmrms"]}
    path = tmp_path / "paper_tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = load_study(path, out_root=tmp_path / "out")
    model = "3dmrms__quantile__unetplusplus-resnet18__consensus"
    out = run_study(study, only=[model, f"{model}__msseg2016_train"], statistics=False)
    assert [j["status"] for j in out["jobs"]] == ["ok", "ok"], out["failed"]
    bundle = json.loads((study.out_dir / "train" / model / "metrics.json").read_text())
    used = bundle["parameters"]
    assert used["normalization_reference"] == "template" and used["template"].endswith(
        "FLAIR_preprocessed.nii.gz"
    )
    assert {k: used[k] for k in keys} == {k: paper[k] for k in keys}


@pytest.mark.slow
def test_failed_training_is_reported_and_its_evaluations_skipped(tmp_path, monkeypatch):
    from msnb.study import run_study

    monkeypatch.setenv("MSNB_DATA", str(tmp_path / "nothing"))
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    # a folder without scans: it passes the roots check (a missing root is refused before any
    # job: test_spec_validation.py), and its training notebook fails
    (tmp_path / "absent").mkdir()
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
