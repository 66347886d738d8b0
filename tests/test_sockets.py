"""Safe on a shared node: a ``--jobs N`` study opens no network port, and ``--scheduler``
fails fast and clearly when nobody answers at that address."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from test_study import _tiny_study

from msnb.cli import main as msnb_main
from msnb.files import restrict_writes, write_roots
from msnb.paths import outputs_root, parameters_dir
from msnb.study import JobSpec, StudyError, job_result, load_study, runners

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="psutil sockets per pid")


def _listening(proc: psutil.Process) -> list[tuple[str, str, int]]:
    """``proc``'s listening sockets: TCP in LISTEN state and bound UDP, as (kind, ip, port)."""
    found = []
    for c in proc.net_connections(kind="inet"):
        if c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN:
            found.append(("tcp", c.laddr.ip, c.laddr.port))
        elif c.type == socket.SOCK_DGRAM and c.laddr:
            found.append(("udp", c.laddr.ip, c.laddr.port))
    return found


class SocketWatch(threading.Thread):
    """Poll a process and all its descendants for listening sockets while a study runs.

    Sockets the root process already had before the watch started are not counted.
    :meth:`findings` gives ``(role, pid, kind, ip, port, command)`` with role ``"study"``,
    ``"kernel"`` (a Jupyter kernel: its command line runs ``ipykernel`` when first seen; an
    exiting process has an empty one while its sockets are still open) or ``"child"``.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.baseline = set(_listening(self.root))
        self.interval = interval
        self.seen: dict[tuple, str] = {}  # (pid, kind, ip, port) -> command line
        self.kernels: set[int] = set()
        self.most_kernels_at_once = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.poll()
            self.halt.wait(self.interval)

    def poll(self) -> None:
        live = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                command = " ".join(proc.cmdline())
                socks = _listening(proc)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            if proc.pid == self.root.pid:
                socks = [s for s in socks if s not in self.baseline]
            if "ipykernel" in command:
                self.kernels.add(proc.pid)
                live += 1
            self.seen.update(((proc.pid, *s), command) for s in socks)
        self.most_kernels_at_once = max(self.most_kernels_at_once, live)

    def findings(self) -> list[tuple]:
        def role(pid: int) -> str:
            if pid == self.root.pid:
                return "study"
            return "kernel" if pid in self.kernels else "child"

        return sorted((role(key[0]), *key, command) for key, command in self.seen.items())

    def stop(self) -> None:
        self.halt.set()
        self.join()


@LINUX
@pytest.mark.slow
def test_a_parallel_study_opens_no_network_port(tmp_path):
    """The tiny study with ``--jobs 2``: no listening TCP/UDP socket in the study process or
    any process it starts, but ipykernel's IOPub pipe (one loopback port per kernel, which
    no ipykernel setting removes: see the next test)."""
    import pandas as pd

    from msnb.study import run_study

    study = load_study(_tiny_study(tmp_path, single_only=True), out_root=tmp_path / "out")
    watch = SocketWatch(os.getpid())
    watch.start()
    try:
        out = run_study(study, jobs=2, progress=False, statistics=False)
    finally:
        watch.stop()
    assert not out["failed"] and len(out["jobs"]) == 4
    results = pd.read_csv(out["results_csv"])
    assert set(results.test_dataset) == {"msseg2016_train", "3dmrms"}
    assert len(watch.kernels) == 4 and watch.most_kernels_at_once == 2
    found = watch.findings()
    others = [f for f in found if f[0] != "kernel"]
    assert others == [], f"listening sockets: {others}"
    kernel_ports = [f for f in found if f[0] == "kernel"]
    assert all(f[2:4] == ("tcp", "127.0.0.1") for f in kernel_ports), kernel_ports
    per_kernel = [sum(f[1] == pid for f in kernel_ports) for pid in watch.kernels]
    assert max(per_kernel) <= 1, kernel_ports


PROBE = """\
import json, os, socket
import psutil
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
ports = sorted(
    c.laddr.port
    for c in psutil.Process().net_connections(kind="inet")
    if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr)
)
print(json.dumps({
    "value": value,
    "transport": app.transport,
    "pipe": getattr(app.iopub_thread, "_pipe_port", None),
    "ports": ports,
    "cwd": os.getcwd(),
    "socket_dir_mode": os.stat(os.path.dirname(app.ip)).st_mode & 0o777,
    "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                           "MALLOC_MMAP_MAX_")},
}))
"""


def _probe_notebook(folder: Path) -> Path:
    import nbformat

    from msnb.study.notebooks import KERNEL

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("value = 0  # parameter", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(PROBE),
        ]
    )
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "msnb", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "probe.ipynb")
    return folder / "probe.ipynb"


def _spec(name: str, notebook: Path, out: Path, *, kind="train", depends_on=None) -> JobSpec:
    return JobSpec(
        kind=kind,
        name=name,
        notebook=notebook,
        output=out / f"{name}.ipynb",
        record=out / f"{name}.job.json",
        parameters={"value": name},
        depends_on=depends_on,
    )


@LINUX
@pytest.mark.slow
def test_parallel_job_kernels_get_their_thread_share_and_folder(tmp_path, monkeypatch):
    """Two jobs at once: each kernel gets its share of the cores and glibc's allocator
    settings, works in its notebook's folder (the study process's own folder unchanged),
    talks over IPC in a folder of mode 0700 and listens on nothing but ipykernel's IOPub
    pipe."""
    import nbformat

    nb = _probe_notebook(tmp_path / "nbs")
    specs = [_spec(n, nb, tmp_path / "out") for n in ("a", "b")]
    monkeypatch.setenv("OMP_NUM_THREADS", "64")  # the study's own settings do not leak in
    monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
    cwd = os.getcwd()
    results = runners.run_jobs(specs, jobs=2)
    assert len(results) == 2 and all(r["status"] == "ok" for r in results), results
    assert os.getcwd() == cwd
    share = str(max(1, (os.cpu_count() or 1) // 2))
    for spec in specs:
        probe = json.loads(nbformat.read(spec.output, 4).cells[-1].outputs[0]["text"])
        assert probe["value"] == spec.name and probe["transport"] == "ipc"
        assert probe["socket_dir_mode"] == 0o700  # nobody else can reach the sockets
        assert probe["env"] == {"OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share,
                                "MALLOC_MMAP_MAX_": "0"}  # fmt: skip
        assert probe["cwd"] == str(nb.parent)
        # The one port a kernel listens on is ipykernel's pipe for forked subprocesses'
        # output (IOPubThread(pipe=True), hard-coded in IPKernelApp.init_iopub).
        assert probe["ports"] == ([probe["pipe"]] if probe["pipe"] else [])


def _fake_run_job(log: list, fail: set, pause: float = 0.05):
    lock = threading.Lock()
    running = [0]

    def run_job(spec: JobSpec) -> dict:
        with lock:
            running[0] += 1
            log.append(("start", spec.name, running[0]))
            log.append(("context", spec.name, write_roots()))
        time.sleep(pause)
        with lock:
            running[0] -= 1
            log.append(("end", spec.name, running[0]))
        status = "failed" if spec.name in fail else "ok"
        return job_result(spec, status, seconds=pause, error="boom" if spec.name in fail else None)

    return run_job


def test_parallel_runner_keeps_dependencies_and_skips_after_a_failed_training(
    tmp_path, monkeypatch
):
    log: list = []
    monkeypatch.setattr(runners, "run_job", _fake_run_job(log, fail={"t2"}))
    nb, out = tmp_path / "x.ipynb", tmp_path / "out"
    pending = [
        _spec("t1", nb, out),
        _spec("t2", nb, out),
        _spec("t3", nb, out),
        _spec("e1a", nb, out, kind="eval", depends_on="t1"),
        _spec("e2a", nb, out, kind="eval", depends_on="t2"),
        _spec("e1b", nb, out, kind="eval", depends_on="t1"),
        _spec("e0", nb, out, kind="eval", depends_on="t0"),  # its training was done before
    ]
    started, done = [], []
    with restrict_writes(out):  # the caller's write roots hold in the job threads
        results = runners.run_jobs(
            pending, jobs=2, on_start=lambda s: started.append(s.name), on_done=done.append
        )
    by_name = {r["name"]: r for r in results}
    assert set(by_name) == {s.name for s in pending} and len(results) == len(pending)
    assert by_name["e2a"]["status"] == "skipped" and "t2" in by_name["e2a"]["error"]
    assert by_name["t2"]["status"] == "failed"
    assert all(by_name[n]["status"] == "ok" for n in ("t1", "t3", "e1a", "e1b", "e0"))
    ran = [name for kind, name, _ in log if kind == "start"]
    assert {value for kind, _, value in log if kind == "context"} == {(out,)}
    assert "e2a" not in ran and sorted(started) == sorted(ran)
    assert done == results  # every result reported once, in the order they ended
    assert max(n for kind, _, n in log if kind == "start") == 2  # two at once, never more
    order = [(kind, name) for kind, name, _ in log if kind != "context"]
    for ev in ("e1a", "e1b"):
        assert order.index(("end", "t1")) < order.index(("start", ev))
    assert ran[:2] == ["t1", "t2"]  # in the grid's order: trainings first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_quick_error(tmp_path, monkeypatch):
    import dask.distributed  # noqa: F401  (imported first: the time below is the connection's)

    log: list = []
    monkeypatch.setattr(runners, "run_job", _fake_run_job(log, fail=set()))
    address = f"tcp://127.0.0.1:{_free_port()}"
    spec = _spec("t1", tmp_path / "x.ipynb", tmp_path / "out")
    start = time.perf_counter()
    with pytest.raises(StudyError, match=rf"--scheduler {address}: .*(no|not).*answer"):
        runners.run_jobs([spec], scheduler=address)
    # a short connect timeout (Dask's default is 30 s), with room for a loaded machine
    assert time.perf_counter() - start < runners.SCHEDULER_TIMEOUT + 10
    assert log == []
    with pytest.raises(StudyError, match=r"--scheduler foo://x:1: .*unknown address scheme"):
        runners.check_scheduler("foo://x:1")


def test_cli_names_the_unreachable_scheduler_and_runs_nothing(
    tmp_path, msseg_root, mrms_root, capsys
):
    spec = yaml.safe_load((parameters_dir() / "tiny.yaml").read_text())
    spec["name"] = "scheduler_probe"
    spec["datasets"] = {
        "msseg2016_train": {"adapter": "msseg2016_train", "root": str(msseg_root)},
        "3dmrms": {"adapter": "3dmrms", "root": str(mrms_root)},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    address = f"tcp://127.0.0.1:{_free_port()}"
    assert msnb_main(["study", str(path), "--scheduler", address]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith(f"msnb study: error: --scheduler {address}: ")
    assert not list((outputs_root() / "scheduler_probe").rglob("*.ipynb"))


def test_parallel_jobs_each_drive_their_own_event_loop(tmp_path, monkeypatch):
    """A notebook run earlier in the calling thread leaves jupyter_core's event loop in the
    caller's context; two jobs at once must not both drive that loop (papermill in each job
    thread uses jupyter_core.utils.run_sync, as here)."""
    from jupyter_client.utils import run_sync  # jupyter_core's, as papermill's client uses

    async def _work() -> str:
        await asyncio.sleep(0.2)
        return "ok"

    assert run_sync(_work)() == "ok"  # as a notebook run in this thread (a test, a user) does

    def job(spec):
        return job_result(spec, run_sync(_work)())

    monkeypatch.setattr(runners, "run_job", job)
    nb, out = tmp_path / "x.ipynb", tmp_path / "out"
    pending = [_spec(f"t{i}", nb, out) for i in range(4)]
    results = runners.run_jobs(pending, jobs=2, on_start=lambda s: None, on_done=lambda r: None)
    assert [r["status"] for r in results] == ["ok"] * 4


def test_a_cell_past_its_timeout_fails_the_run(tmp_path):
    # a hung cell (here: one that sleeps) fails after ``timeout`` instead of waiting forever
    import nbformat

    from msnb.study.notebooks import execute_notebook

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("value = 0", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("import time\ntime.sleep(120)"),
        ]
    )
    nbformat.write(nb, tmp_path / "sleep.ipynb")
    started = time.monotonic()
    with pytest.raises(Exception) as failed:
        execute_notebook(tmp_path / "sleep.ipynb", tmp_path / "out.ipynb", timeout=3)
    assert type(failed.value).__name__ == "CellTimeoutError"  # nbclient's, through papermill
    assert time.monotonic() - started < 60


def test_the_watchdog_ends_a_notebook_run_that_hangs(tmp_path):
    # the tests' guard for hangs nbclient's timeout does not end: the kernel is killed and the
    # test fails at once with NotebookHung (here the run has no cell timeout at all)
    import nbformat
    from conftest import NotebookHung, _kernel_children, run_with_watchdog

    from msnb.study.notebooks import execute_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(600)")])
    nbformat.write(nb, tmp_path / "sleep.ipynb")
    # as in the suite, where earlier tests left jupyter_core an event loop in this context:
    # the retry below must not get the loop the hung run is still spinning
    from jupyter_core.utils import ensure_event_loop

    ensure_event_loop()
    started = time.monotonic()
    with pytest.raises(
        NotebookHung, match=r"sleep.ipynb: not done after 20 s; killed kernels \[\d+\]"
    ):
        run_with_watchdog(
            lambda: execute_notebook(tmp_path / "sleep.ipynb", tmp_path / "out.ipynb"),
            20,
            what="sleep.ipynb",
        )
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 10
    while _kernel_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _kernel_children() == []
    # a run after the hang (the tour's retry) works
    quick = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 6 * 7")])
    nbformat.write(quick, tmp_path / "quick.ipynb")
    run_with_watchdog(
        lambda: execute_notebook(tmp_path / "quick.ipynb", tmp_path / "q.ipynb"), 120, what="q"
    )
    assert nbformat.read(tmp_path / "q.ipynb", as_version=4).cells[0].execution_count == 1
