"""A study run's integrity: what it writes, who runs it, what it tells, what it leaves.

Every path a study writes lies under its outputs folder (a name with ``..`` is refused
before anything runs, and the atomic writer never deletes a folder it was not asked to
replace); one ``msnb study`` at a time per outputs folder (a lock naming its holder); a dry
run shows each job's real state; a resumed run keeps the history of ``timings.json``;
evaluations skipped after a failed training are reported as skipped; each run records its
environment. Phantom generation's workers die with their parent, and the temporaries of
killed runs are cleaned by the next run.

Jobs run through a stand-in for :func:`msnb.study.jobs.run_job` (no notebook runs): these
tests are about the run around the jobs.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_study import _template_study

import msnb
from msnb.cli import main
from msnb.files import atomic_path, restrict_writes, write_json, write_text
from msnb.paths import REPO_ROOT, PathEscapeError, cache_root
from msnb.sources import resolve_datasets
from msnb.study import job_result, job_specs, load_study, run_study
from msnb.study import runners as study_runners
from msnb.study.jobs import JobSpec, write_job_record


def _study(tmp_path: Path, msseg_root: Path, mrms_root: Path):
    """The tiny study on the fake MSSEG and 3D-MR-MS folders: 4 trainings, 4 evaluations."""
    path = _template_study(tmp_path, msseg_root, mrms_root, "08_01")
    return load_study(path, out_root=tmp_path / "out")


@pytest.fixture
def runner(monkeypatch):
    """Jobs "run" without notebooks: a record on success; ``runner.fail`` names jobs that fail."""
    state = SimpleNamespace(calls=[], fail=set())

    def run_job(spec: JobSpec, *, progress: bool = False) -> dict:
        state.calls.append(spec.name)
        if spec.name in state.fail:
            return job_result(spec, "failed", seconds=0.01, error="boom")
        write_job_record(spec, seconds=0.01)
        return job_result(spec, "ok", seconds=0.01)

    monkeypatch.setattr(study_runners, "run_job", run_job)
    return state


def _python(code: str, **kwargs) -> subprocess.Popen:
    """A Python process running ``code`` in the repository, output piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# --------------------------------------------------------------------------- paths


def test_a_name_escaping_the_outputs_is_refused_before_anything_runs(
    tmp_path, msseg_root, mrms_root, runner
):
    """A dataset named ``../../x`` (a study built without load_study's name check) would
    write its notebooks and bundles beside the outputs; the run refuses it first."""
    study = _study(tmp_path, msseg_root, mrms_root)
    bad = "../../escaped"
    datasets = {("../../escaped" if k == "3dmrms" else k): v for k, v in study.datasets.items()}
    experiments = {**study.experiments, "single": ["msseg2016_train", bad]}
    study = dataclasses.replace(study, datasets=datasets, experiments=experiments)
    with pytest.raises(PathEscapeError, match=r"escaped__.*outside .*out/tiny"):
        run_study(study, progress=False, statistics=False)
    assert runner.calls == []
    assert not list(tmp_path.rglob("*escaped*"))
    with pytest.raises(PathEscapeError):  # the dry run says so too
        run_study(study, dry_run=True)


def test_the_atomic_writer_never_deletes_a_folder_it_does_not_own(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data.txt").write_text("precious")
    # a file written where a folder is: refused, the folder stays
    with pytest.raises(IsADirectoryError, match="keep"):
        write_text(keep, "x")
    assert (keep / "data.txt").read_text() == "precious"
    # a target outside the writer's root: refused before anything is written or removed
    root = tmp_path / "outputs"
    with pytest.raises(PathEscapeError, match=r"keep.* outside .*outputs"):
        with atomic_path(root / ".." / "keep", root=root) as tmp:
            tmp.mkdir()
    assert (keep / "data.txt").read_text() == "precious"
    # while a study writes, every write must lie under its folders
    with restrict_writes(root), pytest.raises(PathEscapeError, match="other.json"):
        write_json(tmp_path / "other.json", {"a": 1})
    assert not (tmp_path / "other.json").exists()
    # a folder replaced by a folder under the root: done, nothing left beside it
    with restrict_writes(root):
        for content in ("old", "new"):
            with atomic_path(root / "bundle", root=root) as tmp:
                tmp.mkdir()
                (tmp / "w.txt").write_text(content)
    assert (root / "bundle" / "w.txt").read_text() == "new"
    assert sorted(p.name for p in root.iterdir()) == ["bundle"]


# --------------------------------------------------------------------------- one run


def test_a_second_study_on_the_same_outputs_is_refused_naming_the_holder(
    tmp_path, msseg_root, mrms_root, runner, monkeypatch, capsys
):
    study = _study(tmp_path, msseg_root, mrms_root)
    holder = _python(f"""
        import time
        from msnb.study import load_study
        from msnb.study.run import study_lock
        with study_lock(load_study({str(study.path)!r}, out_root={str(tmp_path / "out")!r})):
            print("locked", flush=True)
            time.sleep(120)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        monkeypatch.setenv("MSNB_OUTPUTS", str(tmp_path / "out"))
        assert main(["study", str(study.path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"pid {holder.pid}" in err[0] and platform.node() in err[0]
        assert "study_lock" in err[0] or "-c" in err[0]  # the holder's command
        assert runner.calls == []
    finally:
        holder.kill()
        holder.wait()
    # the lock went with its holder (kill -9): the study runs now
    out = run_study(study, progress=False, statistics=False)
    assert not out["failed"] and len(runner.calls) == 8


def test_dry_run_shows_each_jobs_real_state(tmp_path, msseg_root, mrms_root, capsys):
    study = _study(tmp_path, msseg_root, mrms_root)
    specs = job_specs(study, resolve_datasets(list(study.datasets), specs=study.datasets))
    done, stale = specs[0], specs[1]
    write_job_record(done, seconds=1.0)
    # the record of a job run with other settings: it runs again
    write_job_record(
        dataclasses.replace(stale, parameters={**stale.parameters, "epochs": 9}), seconds=1.0
    )
    out = run_study(study, dry_run=True)
    lines = capsys.readouterr().out.splitlines()
    assert f"[done]  train {done.name}" in lines
    assert f"[stale] train {stale.name}" in lines
    assert sum(line.startswith("[todo]") for line in lines) == len(specs) - 2
    assert out["states"] == {s.name: "todo" for s in specs[2:]} | {
        done.name: "done",
        stale.name: "stale",
    }


def test_dry_run_does_not_generate_a_missing_phantom(tmp_path, monkeypatch, capsys):
    """Guard: the dry run reads records only; a phantom not generated yet stays so."""
    monkeypatch.setenv("MSNB_OUTPUTS", str(tmp_path / "out"))
    out = run_study(REPO_ROOT / "parameters" / "tiny.yaml", dry_run=True)
    assert not (tmp_path / "out" / "phantom").exists()
    assert set(out["states"].values()) == {"todo"}
    assert "not generated yet" in capsys.readouterr().out


def test_a_resumed_run_keeps_the_timings_history(tmp_path, msseg_root, mrms_root, runner):
    study = _study(tmp_path, msseg_root, mrms_root)
    first = job_specs(study)[0].name
    path = study.out_dir / "timings.json"
    # a timings.json of an older msnb: its run is kept as the first of the history
    write_json(path, {"study": "tiny", "jobs": 1, "seconds": {"total": 5.0}})
    run_study(study, only=[first], progress=False, statistics=False)
    run_study(study, progress=False, statistics=False)
    timings = json.loads(path.read_text())
    runs = timings["runs"]
    assert len(runs) == 3 and runs[0] == {"jobs": 1, "seconds": {"total": 5.0}}
    assert (runs[1]["ran"], runs[1]["skipped"]) == (1, 0)
    assert (runs[2]["ran"], runs[2]["skipped"]) == (7, 1)
    assert runs[1]["started"] < runs[2]["started"] and runs[2]["msnb"] == msnb.__version__
    # the top level is the last run's, as before
    assert timings["study"] == "tiny" and timings["seconds"] == runs[2]["seconds"]
    assert timings["seconds"]["total"] >= timings["seconds"]["grid"]


def test_evaluations_of_a_failed_training_are_reported_skipped(
    tmp_path, msseg_root, mrms_root, runner, monkeypatch, capsys
):
    study = _study(tmp_path, msseg_root, mrms_root)
    bad = job_specs(study)[0].name
    runner.fail.add(bad)
    monkeypatch.setenv("MSNB_OUTPUTS", str(tmp_path / "out"))
    assert main(["study", str(study.path)]) == 1
    printed = capsys.readouterr().out
    evals = [line for line in printed.splitlines() if bad + "__" in line]
    assert len(evals) == 1 and all(
        line.startswith("SKIPPED eval ") and f"training {bad} failed" in line for line in evals
    ), printed
    assert not any(".ipynb" in line for line in evals)  # no notebook exists for them
    assert f"FAILED train {bad}: boom" in printed
    assert "7 jobs run, 0 already done, 1 failed, 1 skipped" in printed


def test_each_run_records_its_environment(tmp_path, msseg_root, mrms_root, runner):
    study = _study(tmp_path, msseg_root, mrms_root)
    run_study(study, only=[], progress=False, statistics=False)
    text = (study.out_dir / "environment.txt").read_text()
    lines = text.splitlines()
    assert f"numpy=={importlib.metadata.version('numpy')}" in lines
    assert f"papermill=={importlib.metadata.version('papermill')}" in lines
    assert f"msnb: {msnb.__version__}" in lines
    assert f"python: {platform.python_version()} ({platform.python_implementation()})" in lines
    if (REPO_ROOT / ".git").exists() and shutil.which("git"):
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert any(line.startswith(f"commit: {head}") for line in lines)
    assert not list(study.out_dir.glob(".environment*"))  # written atomically


# --------------------------------------------------------------------------- dead runs


def _killed_write(target: Path) -> None:
    """A process killed (-9) while it writes ``target`` atomically: its temporary remains."""
    proc = _python(f"""
        import os, signal
        from msnb.files import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL


def test_temporaries_of_killed_runs_are_cleaned_by_the_next_run(
    tmp_path, msseg_root, mrms_root, runner
):
    study = _study(tmp_path, msseg_root, mrms_root)
    out = study.out_dir
    _killed_write(out / "results.csv")
    slices = cache_root() / "slices"
    _killed_write(slices / "key-of-a-killed-training")
    (out / "eval" / "m__t").mkdir(parents=True)
    old_msnb = out / "eval" / "m__t" / ".scans.csv.k2j3h4g5.tmp.csv"  # before pids were named
    old_msnb.write_text("half")
    killed = [p for p in out.iterdir() if p.name.startswith(".results.csv.")]
    killed_cache = [p for p in slices.iterdir() if p.name.startswith(".key-of-a-killed")]
    assert len(killed) == 1 and len(killed_cache) == 1
    # a temporary of a live writer (this process) in the shared cache is not touched
    with atomic_path(slices / "key-being-written") as live:
        live.mkdir()
        run_study(study, only=[], progress=False, statistics=False)
        assert live.is_dir()
    assert not killed[0].exists() and not old_msnb.exists() and not killed_cache[0].exists()
    assert (slices / "key-being-written").is_dir()


def test_phantom_workers_die_with_their_parent_and_its_temporaries_go(tmp_path, monkeypatch):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "phantom"
    gen = _python(f"""
        from msnb.phantom import generate_phantom
        generate_phantom({str(out)!r}, preset="tiny", workers=2, progress=False)
    """)
    workers = []
    try:
        deadline = time.monotonic() + 120
        parent = psutil.Process(gen.pid)
        while len(workers) < 2 and time.monotonic() < deadline and gen.poll() is None:
            workers = parent.children()
            time.sleep(0.2)
        assert len(workers) == 2, gen.stderr.read() if gen.poll() is not None else "no workers"
        time.sleep(1.0)  # the workers are simulating scans
        gen.kill()
        gen.wait()
        gone, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"workers {[p.pid for p in alive]} outlived their parent"
    finally:
        for p in workers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    left = sorted(p.name for p in out.iterdir() if ".tmp" in p.name)
    assert len(left) == 3 and not (out / "phantom.json").exists()  # the killed run's folders
    # the next run cleans them (its scans stood in for: the cleaning is what is tested)
    monkeypatch.setattr("msnb.phantom.generate._run_tasks", lambda *a, **k: [])
    from msnb.phantom import generate_phantom

    generate_phantom(out, preset="tiny", workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir() if ".tmp" in p.name) == []


def test_phantom_json_records_the_versions_its_bytes_depend_on(tmp_path, monkeypatch):
    from msnb.phantom import generate_phantom

    monkeypatch.setattr("msnb.phantom.generate._run_tasks", lambda *a, **k: [])
    generate_phantom(tmp_path, preset="tiny", workers=1, progress=False)
    versions = json.loads((tmp_path / "phantom.json").read_text())["versions"]
    expected = {d: importlib.metadata.version(d) for d in ("numpy", "scipy", "nibabel", "nilearn")}
    assert versions == {**expected, "python": platform.python_version(), "msnb": msnb.__version__}


def test_phantom_out_on_a_file_is_one_clear_line(tmp_path, capsys):
    target = tmp_path / "not-a-folder"
    target.write_text("mine")
    assert main(["phantom", "--out", str(target), "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and "not a folder" in err[0], err
    assert target.read_text() == "mine"


def _cells_ran(notebooks: list[Path]) -> bool:
    """Whether the notebook papermill is writing has a cell executed (its kernel is up and
    running cells: an interrupt while a kernel starts is not what the test is about)."""
    try:
        cells = json.loads(notebooks[0].read_text())["cells"]
    except (IndexError, OSError, ValueError, KeyError):
        return False
    return any(c.get("execution_count") for c in cells)


def _marked_processes(marker: str) -> list[int]:
    """Process ids whose environment holds ``marker`` (Linux: /proc)."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


def test_ctrl_c_ends_a_study_with_one_line_and_leaves_no_kernel(tmp_path, msseg_root, mrms_root):
    """SIGINT to the study's process group (Ctrl-C in a terminal) while a training notebook
    runs: exit 130 with one line saying how to resume instead of a traceback, no kernel
    left, and the interrupted job is still to do."""
    path = _template_study(tmp_path, msseg_root, mrms_root, "08_01")
    marker = f"MSNB_TEST_CTRL_C_{tmp_path.name}"
    env = {**os.environ, "MSNB_OUTPUTS": str(tmp_path / "out"), marker: "1"}
    cmd = [sys.executable, "-m", "msnb.cli", "study", str(path), "--jobs", "1"]
    run = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        notebooks = []
        while not _cells_ran(notebooks) and time.monotonic() < deadline and run.poll() is None:
            notebooks = list((tmp_path / "out").glob("*/train/*.ipynb"))
            time.sleep(0.5)
        assert notebooks, run.communicate()[1][-2000:] if run.poll() is not None else "no job"
        assert _cells_ran(notebooks), "the training notebook ran no cell in 300 s"
        os.killpg(run.pid, signal.SIGINT)  # its kernel is running the training notebook
        _, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, err[-2000:]
    # no traceback through msnb or papermill (the kernel, in its own session, may still say
    # that it was interrupted while it shut down)
    assert "msnb/study" not in err and "papermill" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "msnb study: interrupted; the jobs that finished are kept: run the same command again "
        "to resume"
    )
    deadline = time.monotonic() + 20
    while _marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _marked_processes(marker) == []  # the kernel went with the study
    study = load_study(path, out_root=tmp_path / "out")
    interrupted = next(s for s in job_specs(study) if s.output == notebooks[0])
    assert not interrupted.is_done()
