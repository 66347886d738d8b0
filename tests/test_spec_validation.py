"""Study files are refused at load time, with the file, the YAML line and the key.

Before issue 12 most of these inputs passed ``load_study`` (and ``--dry-run``) and failed
only inside a notebook, or were silently wrong (duplicate keys, colliding model ids); the
others were refused without their line, or with a traceback. Messages have the form
``<file>:<line>: <key>: <problem>`` on one line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

import msnb.study.grid as grid
from msnb.paths import parameters_dir
from msnb.recipe import TrainConfig
from msnb.study import StudyError, expand_study, load_study

TRAINING = {"size": "32", "epochs": "1", "batch_size": "8", "device": "cpu"}


def study_text(*, training: dict | None = None, datasets: str = "", experiments: str = "") -> str:
    """A tiny phantom study; ``training`` replaces settings (value None drops one)."""
    settings = {**TRAINING, **(training or {})}
    lines = "\n".join(f"  {k}: {v}" for k, v in settings.items() if v is not None)
    datasets = datasets or (
        "  msseg2016_train: {phantom: tiny, seed: 0}\n  3dmrms: {phantom: tiny, seed: 0}"
    )
    experiments = experiments or (
        "  single: [msseg2016_train, 3dmrms]\n"
        "  ablations:\n"
        "    - {name: linear, change: {normalization: linear}, of: [single]}"
    )
    return f"name: t\ndatasets:\n{datasets}\ntraining:\n{lines}\nexperiments:\n{experiments}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, marker: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line of ``path`` that contains ``marker``."""
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if marker in line]
    return hits[nth - 1]


def refused(path: Path, key: str, marker: str, *fragments: str, nth: int = 1) -> str:
    """Load ``path``; assert one ``<file>:<line>: <key>: ...`` line with ``fragments``."""
    with pytest.raises(StudyError) as info:
        load_study(path, out_root=path.parent / "out")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line_of(path, marker, nth)}: {key}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------- duplicate keys


def test_a_second_training_block_is_refused_not_last_wins(tmp_path):
    text = study_text() + "training:\n  epochs: 5\n"
    path = write(tmp_path, text)
    first, second = line_of(path, "training:"), line_of(path, "training:", 2)
    message = refused(path, "training", "training:", "duplicate key", nth=2)
    assert f"lines {first} and {second}" in message


@pytest.mark.parametrize(
    ("text", "key", "marker"),
    [
        (study_text(training={"epochs": "1\n  epochs: 2"}), "training.epochs", "epochs: 2"),
        (
            study_text(
                datasets="  3dmrms: {phantom: tiny, seed: 0, seed: 1}",
                experiments="  single: [3dmrms]",
            ),
            "datasets.3dmrms.seed",
            "seed: 1",
        ),
        (
            study_text(
                experiments="  single: [3dmrms]\n  ablations:\n"
                "    - name: big\n      change: {size: 64, size: 96}"
            ),
            "experiments.ablations[0].change.size",
            "size: 96",
        ),
    ],
)
def test_duplicate_keys_are_refused_at_any_depth(tmp_path, text, key, marker):
    path = write(tmp_path, text)
    refused(path, key, marker, "duplicate key")


# --------------------------------------------------------------------------- dataset names


@pytest.mark.parametrize("name", ["a+b", "a/b", "..", "x__y", "a b", "Isbi", "-a", "a_", "a.b"])
def test_dataset_names_outside_the_character_set_are_refused(tmp_path, name):
    datasets = f'  "{name}": {{adapter: folder, root: /tmp}}\n  c: {{adapter: folder, root: /tmp}}'
    experiments = f'  single: ["{name}", c]'
    path = write(tmp_path, study_text(datasets=datasets, experiments=experiments))
    refused(path, f"datasets.{name}", f'"{name}": {{', "[a-z0-9]")


def test_a_plus_dataset_cannot_take_the_model_of_a_combination(tmp_path):
    """``a+b`` and the combination ``[a, b]`` had the same model id: one model for both."""
    datasets = "\n".join(f'  "{d}": {{adapter: folder, root: /tmp}}' for d in ("a", "b", "a+b"))
    experiments = '  single: ["a+b"]\n  combinations:\n    - {train: [a, b], test: ["a+b"]}'
    path = write(tmp_path, study_text(datasets=datasets, experiments=experiments))
    refused(path, "datasets.a+b", '"a+b": {')


def test_two_configurations_with_one_model_id_are_refused(tmp_path, monkeypatch):
    """The guard behind the construction: no path may give two settings one model id."""
    path = write(tmp_path, study_text())
    study = load_study(path, out_root=tmp_path)
    monkeypatch.setattr(grid, "model_id_for", lambda train, settings, defaults=None: "same")
    with pytest.raises(StudyError) as info:
        expand_study(study)
    message = str(info.value)
    single = line_of(path, "single:")
    assert message.startswith(f"{path}:{single}: experiments.single[1]: "), message
    assert "experiments.single[0]" in message and "'same'" in message and "\n" not in message


# --------------------------------------------------------------------------- training settings


@pytest.mark.parametrize(
    ("setting", "value", "fragments"),
    [
        ("size", "33", ["positive multiple of 32", "got 33"]),
        ("size", "0", ["positive multiple of 32"]),
        ("epochs", "0", ["at least 1, got 0"]),
        ("batch_size", "0", ["at least 1, got 0"]),
        ("lr", "-0.001", ["more than 0"]),
        ("lr", "0", ["more than 0"]),
        ("val_fraction", "1.5", ["in (0, 1)", "1.5"]),
        ("val_fraction", "0", ["in (0, 1)"]),
        ("pos_weight", "1.5", ["in (0, 1)"]),
        ("seed", "-1", ["[0, 4294967295]"]),
        ("max_slices_per_epoch", "0", ["at least 1"]),
        ("time_budget_s", "-5", ["at least 0"]),
        ("architecture", "resnet", ["unetplusplus, unet"]),
        ("encoder", "ResNet18", ["lower-case"]),
        ("normalization", "quantil", ["quantile, linear, zscore, identity", "'quantil'"]),
        ("label", "expert", ["consensus, union, majority, rater<k>", "'expert'"]),
        ("label", "rater0", ["rater<k>"]),
        ("device", "gpu", ["auto, cpu, cuda, mps, cuda:<index>", "'gpu'"]),
        ("selection_metric", "dice", ["pooled_dice, mean_slice_dice"]),
    ],
)
def test_training_settings_are_checked_at_load(tmp_path, setting, value, fragments):
    path = write(tmp_path, study_text(training={setting: value}))
    refused(path, f"training.{setting}", f"{setting}: {value}", *fragments)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("size", 33),
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", -0.001),
        ("val_fraction", 1.5),
        ("pos_weight", 1.5),
        ("seed", -1),
        ("normalization", "quantil"),
        ("device", "gpu"),
        ("encoder", "ResNet18"),
    ],
)
def test_train_config_refuses_what_a_study_refuses(tmp_path, setting, value):
    """One source of truth: the study's message is TrainConfig's, at the study's key."""
    with pytest.raises(ValueError) as config:
        TrainConfig(**{setting: value})
    path = write(tmp_path, study_text(training={setting: value}))
    problem = str(config.value).removeprefix(f"{setting}: ")
    refused(path, f"training.{setting}", f"{setting}: {value}", problem)


@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("size", "33", "multiple of 32"),
        ("device", "gpu", "cuda:<index>"),
        ("lr", "0", "more than 0"),
    ],
)
def test_ablation_changes_are_checked_as_training_is(tmp_path, setting, value, fragment):
    experiments = (
        f"  single: [3dmrms]\n  ablations:\n    - name: x\n      change: {{{setting}: {value}}}"
    )
    path = write(tmp_path, study_text(experiments=experiments))
    refused(path, f"experiments.ablations[0].change.{setting}", "change:", fragment)


def test_label_experiment_labels_are_checked(tmp_path):
    experiments = "  labels:\n    dataset: msseg2016_train\n    labels: [rater1, expert]"
    path = write(tmp_path, study_text(experiments=experiments))
    refused(path, "experiments.labels.labels[1]", "labels: [", "'expert'", "rater<k>")


def test_combination_seeds_are_checked(tmp_path):
    experiments = "  combinations:\n    - {train: [3dmrms], test: [msseg2016_train], seeds: [-1]}"
    path = write(tmp_path, study_text(experiments=experiments))
    refused(path, "experiments.combinations[0].seeds[0]", "seeds: [-1]", "[0, 4294967295]")


def test_a_folder_mask_name_is_a_label(tmp_path):
    """A folder dataset's own mask names are labels too (msnb.datasets.load_folder)."""
    datasets = (
        "  lesions_set: {adapter: folder, root: /tmp, options: {flair: '*.nii.gz',"
        " masks: {lesions: '{stem}_mask.nii.gz'}}}"
    )
    path = write(
        tmp_path,
        study_text(
            datasets=datasets, training={"label": "lesions"}, experiments="  single: [lesions_set]"
        ),
    )
    assert load_study(path, out_root=tmp_path).training["label"] == "lesions"


# --------------------------------------------------------------------------- duplicate names


@pytest.mark.parametrize(
    ("experiments", "key", "marker"),
    [
        ("  single: [3dmrms, msseg2016_train, 3dmrms]", "experiments.single[2]", "single:"),
        (
            "  combinations:\n    - {train: [3dmrms, 3dmrms], test: [msseg2016_train]}",
            "experiments.combinations[0].train[1]",
            "- {train:",
        ),
        (
            "  combinations:\n    - {train: [3dmrms], test: [msseg2016_train, msseg2016_train]}",
            "experiments.combinations[0].test[1]",
            "- {train:",
        ),
        (
            "  single: [3dmrms]\n  ablations:\n"
            "    - {name: x, change: {normalization: linear}}\n"
            "    - {name: x, change: {architecture: unet}}",
            "experiments.ablations[1].name",
            "architecture: unet",
        ),
        (
            "  labels: {dataset: msseg2016_train, labels: [rater1, rater1]}",
            "experiments.labels.labels[1]",
            "labels:",
        ),
    ],
)
def test_repeated_names_are_refused(tmp_path, experiments, key, marker):
    path = write(tmp_path, study_text(experiments=experiments))
    refused(path, key, marker, "repeated")


@pytest.mark.parametrize("name", ["bad;name", "Linear", ""])
def test_ablation_names_follow_the_name_rule(tmp_path, name):
    experiments = (
        f'  single: [3dmrms]\n  ablations:\n    - {{name: "{name}", change: {{epochs: 2}}}}'
    )
    path = write(tmp_path, study_text(experiments=experiments))
    refused(path, "experiments.ablations[0].name", "name: ", "[a-z0-9]", nth=2)


# --------------------------------------------------------------------------- dataset roots


def test_dataset_roots_are_checked_before_any_job(tmp_path):
    from msnb.study.spec import check_dataset_roots

    afile = tmp_path / "afile"
    afile.write_text("x")
    datasets = (
        f"  here: {{adapter: folder, root: {tmp_path}}}\n"
        f"  missing: {{adapter: folder, root: {tmp_path / 'nope'}}}\n"
        f"  afile: {{adapter: folder, root: {afile}}}\n"
        "  3dmrms: {phantom: tiny}"
    )
    path = write(tmp_path, study_text(datasets=datasets, experiments="  single: [here, 3dmrms]"))
    study = load_study(path, out_root=tmp_path / "out")  # load reads no dataset (dry runs)
    with pytest.raises(StudyError) as info:
        check_dataset_roots(study)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_of(path, 'missing:')}: datasets.missing.root: ")
    assert "does not exist" in message and str(tmp_path / "nope") in message
    study.datasets.pop("missing")
    with pytest.raises(StudyError, match=r"datasets\.afile\.root: .* is not a folder"):
        check_dataset_roots(study)
    study.datasets.pop("afile")
    check_dataset_roots(study)  # a folder, and a phantom (generated on demand)
    # a run checks them first: nothing generated, no job run, no study folder written
    from msnb.study import run_study

    with pytest.raises(StudyError, match=r"datasets\.missing\.root: .* does not exist"):
        run_study(load_study(path, out_root=tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- file errors


def test_yaml_syntax_errors_are_one_line_with_the_line(tmp_path):
    path = write(tmp_path, study_text(training={"epochs": "[1, 2"}))
    with pytest.raises(StudyError) as info:
        load_study(path, out_root=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and "not valid YAML" in message and "\n" not in message


def test_a_directory_or_binary_study_file_is_refused(tmp_path):
    with pytest.raises(StudyError, match="is a directory"):
        load_study(tmp_path, out_root=tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(StudyError, match="not UTF-8"):
        load_study(path, out_root=tmp_path)


# --------------------------------------------------------------------------- bundled studies


@pytest.mark.parametrize(
    ("name", "trains", "evals"), [("quick", 38, 99), ("paper", 26, 63), ("tiny", 4, 4)]
)
def test_bundled_studies_load_and_expand_as_before(tmp_path, name, trains, evals):
    path = parameters_dir() / f"{name}.yaml"
    study = load_study(path, out_root=tmp_path)
    assert study.raw == yaml.safe_load(path.read_text())  # the checking loader reads the same
    train_jobs, eval_jobs = expand_study(study)
    assert (len(train_jobs), len(eval_jobs)) == (trains, evals)
    ids = [t.model_id for t in train_jobs]
    assert len(set(ids)) == len(ids)
    assert {e.model_id for e in eval_jobs} == set(ids)
    assert study.line("training.epochs") == line_of(path, "  epochs:")
