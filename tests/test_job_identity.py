"""A job's identity: everything that determines its output, nothing that does not.

A job's record (``<name>.job.json``) holds the digest of its identity; a job whose record
matches is skipped. The identity covers the parameters (with the outputs folder and the
data roots replaced by placeholders, so copying them elsewhere keeps every record), the
source notebook's code, the msnb version, and what the job reads: the dataset files of a
training (and of an evaluation's test set), the training of an evaluation's model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from test_study import _template_study

import msnb
from msnb.paths import notebooks_dir, parameters_dir
from msnb.sources import resolve_datasets
from msnb.study import job_specs, load_study
from msnb.study.jobs import EVAL_NOTEBOOK, TRAIN_NOTEBOOK, write_job_record


def _specs(folder: Path, *, subject: str = "08_01") -> dict:
    """The jobs of a template study on the fake MSSEG and 3D-MR-MS folders under
    ``folder``, with their datasets resolved: ``{name: JobSpec}``."""
    path = _template_study(folder, folder / "msseg", folder / "3dmrms", subject)
    study = load_study(path, out_root=folder / "out")
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    return {s.name: s for s in job_specs(study, datasets)}


def _digests(specs: dict) -> dict[str, str]:
    return {name: s.digest for name, s in specs.items()}


def _reading(specs: dict, dataset: str) -> set[str]:
    """Jobs that read ``dataset``: trainings on it, evaluations of those or tested on it."""
    trains = {n for n, s in specs.items() if dataset in s.parameters.get("train_datasets", ())}
    evals = {
        n
        for n, s in specs.items()
        if s.kind == "eval" and (s.depends_on in trains or s.parameters["test_dataset"] == dataset)
    }
    return trains | evals


def _write_records(specs: dict) -> None:
    for s in specs.values():
        write_job_record(s, seconds=1.0)


@pytest.fixture
def notebook_copies(tmp_path, monkeypatch) -> Path:
    """The study's source notebooks copied to a folder the jobs read them from."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in (TRAIN_NOTEBOOK, EVAL_NOTEBOOK):
        shutil.copy(notebooks_dir() / name, folder / name)
    monkeypatch.setattr("msnb.study.jobs.notebooks_dir", lambda: folder)
    return folder


def _edit_notebook(path: Path, edit) -> None:
    nb = json.loads(path.read_text())
    edit(nb)
    path.write_text(json.dumps(nb, indent=1))


def _tiny_digests() -> dict[str, str]:
    study = load_study(parameters_dir() / "tiny.yaml", out_root=Path("/tmp/digest_out"))
    return {s.name: s.digest for s in job_specs(study)}  # a dry run: nothing resolved


def test_editing_a_notebooks_code_reruns_its_jobs_only(notebook_copies):
    before = _tiny_digests()
    trains = {n for n in before if "__consensus__" not in n}
    assert len(trains) == 4 and len(before) == 8

    def code_cell(nb: dict) -> dict:
        return next(
            c
            for c in nb["cells"]
            if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])
        )

    def noise(nb: dict) -> None:  # what executing or opening a notebook changes
        cell = code_cell(nb)
        cell["execution_count"] = 7
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x\n"]}]
        cell["metadata"]["collapsed"] = True
        nb["metadata"]["language_info"]["version"] = "3.99"

    _edit_notebook(notebook_copies / EVAL_NOTEBOOK, noise)
    assert _tiny_digests() == before

    def code_edit(nb: dict) -> None:
        code_cell(nb)["source"].append("\nprint('changed')")

    _edit_notebook(notebook_copies / EVAL_NOTEBOOK, code_edit)
    after_eval = _tiny_digests()
    assert {n for n in before if after_eval[n] != before[n]} == set(before) - trains
    # the training notebook: its jobs change, and so do the evaluations of their models
    _edit_notebook(notebook_copies / TRAIN_NOTEBOOK, code_edit)
    after_train = _tiny_digests()
    assert all(after_train[n] != after_eval[n] for n in before)


def test_a_markdown_edit_keeps_the_digests(notebook_copies):
    """Narrative text does not change a job's results: fixing a typo retrains nothing."""
    before = _tiny_digests()

    def prose(nb: dict) -> None:
        cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
        cell["source"] = ["# A question, reworded\n"]

    _edit_notebook(notebook_copies / TRAIN_NOTEBOOK, prose)
    assert _tiny_digests() == before


def test_another_msnb_version_reruns_every_job(monkeypatch):
    before = _tiny_digests()
    monkeypatch.setattr(msnb, "__version__", "99.0.0")
    after = _tiny_digests()
    assert after.keys() == before.keys()
    assert all(after[n] != before[n] for n in before)


def test_copied_outputs_and_data_keep_every_record(
    tmp_path, tmp_path_factory, msseg_root, mrms_root
):
    """Copying the outputs and the datasets elsewhere (``cp -a``, which keeps file times)
    keeps every job done, though every path in their parameters changed."""
    specs = _specs(tmp_path)
    _write_records(specs)
    assert all(s.is_done() for s in specs.values())
    copy = tmp_path_factory.mktemp("copy") / "study"
    shutil.copytree(tmp_path, copy)  # copy2: file times kept
    moved = _specs(copy)
    assert moved.keys() == specs.keys()
    some = next(s for s in moved.values() if s.kind == "train")
    assert some.parameters["template"].startswith(str(copy))  # papermill gets real paths
    assert some.parameters["out_dir"] == str(copy / "out" / "tiny" / "train")
    assert _digests(moved) == _digests(specs)
    assert all(s.is_done() for s in moved.values())


def _fake_phantom(outputs: Path, msseg_root: Path, mrms_root: Path) -> Path:
    """A "tiny, seed 0" phantom made of the fake folders: its ``phantom.json`` and the
    dataset folders where :func:`msnb.sources.phantom_root` looks (no generation)."""
    root = outputs / "phantom" / "tiny-seed0"
    shutil.copytree(msseg_root, root / "msseg2016")
    shutil.copytree(mrms_root, root / "3dmrms")
    (root / "phantom.json").write_text(json.dumps({"preset": "tiny", "seed": 0, "scans": []}))
    return root


def _phantom_specs(folder: Path, monkeypatch) -> dict:
    monkeypatch.setenv("MSNB_OUTPUTS", str(folder / "outputs"))
    study = load_study(parameters_dir() / "tiny.yaml")
    assert study.out_dir == folder / "outputs" / "tiny"
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    assert all(d["root"].startswith(str(folder / "outputs")) for d in datasets.values())
    return {s.name: s for s in job_specs(study, datasets)}


def test_a_copied_outputs_folder_keeps_its_phantom_studys_records(
    tmp_path, monkeypatch, msseg_root, mrms_root
):
    """A phantom is identified by its ``phantom.json``: a plain ``cp -r`` of the outputs
    folder (file times not kept) keeps the study's records."""
    home = tmp_path / "home"
    phantom = _fake_phantom(home / "outputs", msseg_root, mrms_root)
    specs = _phantom_specs(home, monkeypatch)
    _write_records(specs)
    copy = tmp_path / "elsewhere"
    shutil.copytree(home, copy, copy_function=shutil.copy)  # file times not kept
    assert _digests(_phantom_specs(copy, monkeypatch)) == _digests(specs)
    assert all(s.is_done() for s in _phantom_specs(copy, monkeypatch).values())
    # another phantom (a new phantom.json) is other data: every job reruns
    (copy / "outputs" / phantom.relative_to(home / "outputs") / "phantom.json").write_text("{}")
    other = _phantom_specs(copy, monkeypatch)
    assert all(other[n].digest != d for n, d in _digests(specs).items())


def test_a_changed_dataset_file_reruns_the_jobs_that_read_it(tmp_path, msseg_root, mrms_root):
    specs = _specs(tmp_path)
    before = _digests(specs)
    mrms = _reading(specs, "3dmrms")
    assert mrms and mrms != set(specs)
    # a touched file (same bytes, new time)
    flair = mrms_root / "patient02" / "patient02_FLAIR.nii.gz"
    stat = flair.stat()
    os.utime(flair, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = _digests(_specs(tmp_path))
    assert {n for n in before if touched[n] != before[n]} == mrms
    # a file written again with other bytes
    mask = mrms_root / "patient01" / "patient01_consensus_gt.nii.gz"
    mask.write_bytes(mask.read_bytes() + b"\0")
    rewritten = _digests(_specs(tmp_path))
    assert {n for n in before if rewritten[n] != touched[n]} == mrms
    # a new scan
    shutil.copytree(mrms_root / "patient03", mrms_root / "patient04")
    for f in (mrms_root / "patient04").iterdir():
        f.rename(f.with_name(f.name.replace("patient03", "patient04")))
    added = _digests(_specs(tmp_path))
    assert {n for n in before if added[n] != rewritten[n]} == mrms


def test_the_template_scans_dataset_is_part_of_every_training_using_it(
    tmp_path, msseg_root, mrms_root
):
    """Every model normalizes onto one MSSEG scan: a 3D-MR-MS model reads MSSEG too."""
    specs = _specs(tmp_path)
    before = _digests(specs)
    brain = msseg_root / "Training" / "Center_08" / "Patient_01" / "Masks" / "Brain_Mask.nii.gz"
    brain.write_bytes(brain.read_bytes() + b"\0")
    after = _digests(_specs(tmp_path))
    trains = {n for n, s in specs.items() if s.kind == "train"}
    assert all(after[n] != before[n] for n in trains)


def test_a_training_setting_outside_the_model_id_reruns_its_evaluations(
    tmp_path, msseg_root, mrms_root
):
    """Regression test (it passed before the identity covered notebooks and data): epochs
    is not in the model id; with done records under epochs 1, nothing is done under 2."""
    specs = _specs(tmp_path)
    _write_records(specs)
    path = tmp_path / "template.yaml"
    path.write_text(path.read_text().replace("epochs: 1", "epochs: 2"))
    study = load_study(path, out_root=tmp_path / "out")
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    again = job_specs(study, datasets)
    assert {s.name for s in again} == set(specs)
    assert not any(s.is_done() for s in again)


def test_an_evaluation_of_a_model_to_train_again_is_not_done(tmp_path, msseg_root, mrms_root):
    """A training whose record is gone runs again (and may give other weights): the
    evaluations of its model are not done either, though their own records match."""
    specs = _specs(tmp_path)
    _write_records(specs)
    model = next(n for n, s in specs.items() if s.kind == "train")
    specs[model].record.unlink()
    not_done = {n for n, s in specs.items() if not s.is_done()}
    assert not_done == {model} | {n for n, s in specs.items() if s.depends_on == model}


def test_a_record_of_an_older_msnb_means_run_again(tmp_path):
    """Before job identities, a training's record held the digest of its parameters only."""
    spec = job_specs(load_study(parameters_dir() / "tiny.yaml", out_root=tmp_path))[0]
    assert spec.kind == "train"
    blob = json.dumps(spec.parameters, sort_keys=True, default=str).encode()
    record = {"digest": hashlib.sha256(blob).hexdigest(), "status": "ok", "seconds": 1.0}
    spec.record.parent.mkdir(parents=True)
    spec.record.write_text(json.dumps({**record, "parameters": spec.parameters}))
    assert not spec.is_done()


@pytest.mark.parametrize(
    "record",
    [
        "[1, 2]",
        '"ok"',
        "{not json",
        "",
    ],
)
def test_old_or_broken_records_mean_run_again(tmp_path, record):
    spec = job_specs(load_study(parameters_dir() / "tiny.yaml", out_root=tmp_path))[0]
    spec.record.parent.mkdir(parents=True, exist_ok=True)
    spec.record.write_text(record)
    assert not spec.is_done()


def test_an_unreadable_record_of_a_job_is_not_done(tmp_path):
    spec = job_specs(load_study(parameters_dir() / "tiny.yaml", out_root=tmp_path))[0]
    spec.record.parent.mkdir(parents=True, exist_ok=True)
    spec.record.write_bytes(b"\xff\xfe{")  # not UTF-8
    assert not spec.is_done()


def test_a_dry_run_still_has_digests_and_placeholders():
    study = load_study(parameters_dir() / "tiny.yaml", out_root=Path("/tmp/digest_out"))
    specs = job_specs(study)
    assert len({s.digest for s in specs}) == len(specs) == 8
    assert all(s.parameters["dataset_specs"][d]["root"] == "?" for s in specs
               for d in s.parameters["dataset_specs"])  # fmt: skip


def test_paths_in_the_identity_are_relative_to_the_longest_root(monkeypatch, tmp_path):
    from msnb.study.jobs import relative_parameters

    monkeypatch.setenv("HOME", str(tmp_path))
    roots = {"out": "/o/study", "data:a": "~/data/a", "data:b": "/o/study/data"}
    parameters = {
        "out_dir": "/o/study/train",
        "files": [str(tmp_path / "data" / "a" / "x.nii"), "/o/study/data/y.nii", "/o/studyx/z"],
        "dataset_specs": {"a": {"root": "~/data/a/", "options": {}}},
        "epochs": 2,
    }
    assert relative_parameters(parameters, roots) == {
        "out_dir": "{out}/train",
        "files": ["{data:a}/x.nii", "{data:b}/y.nii", "/o/studyx/z"],
        "dataset_specs": {"a": {"root": "{data:a}/", "options": {}}},
        "epochs": 2,
    }


def _analysis_digests(folder: Path) -> dict[str, str]:
    """Digests of the statistics and agreement jobs of the template study under ``folder``
    (a ``results.csv`` written in its outputs)."""
    from msnb.study.results import analysis_specs

    path = _template_study(folder, folder / "msseg", folder / "3dmrms", "08_01")
    study = load_study(path, out_root=folder / "out")
    datasets = resolve_datasets(list(study.datasets), specs=study.datasets)
    csv = study.out_dir / "results.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    if not csv.exists():
        csv.write_text("model_id,dice\nm,0.5\n")
    return {s.name: s.digest for s in analysis_specs(study, datasets, csv)}


def test_statistics_and_agreement_keep_their_records_when_moved_and_follow_their_data(
    tmp_path, tmp_path_factory, msseg_root, mrms_root
):
    before = _analysis_digests(tmp_path)
    assert "statistics" in before and any(n.startswith("agreement-") for n in before)
    copy = tmp_path_factory.mktemp("copy") / "study"
    shutil.copytree(tmp_path, copy)
    assert _analysis_digests(copy) == before
    # an agreement notebook reads its dataset's rater masks: a changed file reruns it only
    agreement = next(n for n in before if n.startswith("agreement-"))
    masks = sorted((tmp_path / "msseg" / "Training").rglob("*.nii*"))
    mask = next(p for p in masks if "Consensus" in p.name)
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    after = _analysis_digests(tmp_path)
    assert after[agreement] != before[agreement] and after["statistics"] == before["statistics"]
