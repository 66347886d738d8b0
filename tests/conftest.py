"""Shared fixtures: tiny NIfTI datasets written in each real dataset's layout, and the
notebooks with their runner (the recommenders' notebook smoke-test pattern)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnb.paths import notebooks_dir

SHAPE = (24, 28, 20)


def affine_ras(zoom=(1.0, 1.0, 1.0)) -> np.ndarray:
    return np.diag([*zoom, 1.0])


def affine_lps(shape=SHAPE, zoom=(1.0, 1.0, 1.0)) -> np.ndarray:
    """An LPS-oriented affine (x and y flipped), as DICOM-converted scans often have."""
    aff = np.diag([-zoom[0], -zoom[1], zoom[2], 1.0])
    aff[:3, 3] = [(shape[0] - 1) * zoom[0], (shape[1] - 1) * zoom[1], 0]
    return aff


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine if affine is not None else affine_ras()), str(path))
    return path


def make_brain(shape=SHAPE) -> np.ndarray:
    """An ellipsoid brain filling most of the volume."""
    idx = np.indices(shape).astype(float)
    c = [(s - 1) / 2 for s in shape]
    r = [s * 0.4 for s in shape]
    return sum(((idx[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1


def make_flair(rng: np.random.Generator, brain: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    img = np.where(brain, 100 + 5 * rng.standard_normal(brain.shape), 0)
    img[lesion] += 60
    return img.astype(np.float32)


def make_lesion(brain: np.ndarray, center=(12, 14, 10), radius=2.5) -> np.ndarray:
    idx = np.indices(brain.shape)
    d2 = sum((idx[i] - center[i]) ** 2 for i in range(3))
    return (d2 <= radius**2) & brain


def scan_arrays(seed: int, *, skull_stripped: bool = True):
    rng = np.random.default_rng(seed)
    brain = make_brain()
    lesion = make_lesion(brain, center=(12 + seed % 3, 14, 10))
    flair = make_flair(rng, brain, lesion)
    rater2 = make_lesion(brain, center=(12 + seed % 3, 15, 10))
    return flair, lesion.astype(np.uint8), rater2.astype(np.uint8), brain.astype(np.uint8)


@pytest.fixture
def isbi_root(tmp_path: Path) -> Path:
    root = tmp_path / "isbi"
    for nn, tps in (("01", 3), ("02", 2)):
        for t in range(1, tps + 1):
            flair, m1, m2, _ = scan_arrays(int(nn) * 10 + t)
            sub = root / "training" / f"training{nn}"
            write(sub / "preprocessed" / f"training{nn}_{t:02d}_flair_pp.nii", flair)
            write(sub / "masks" / f"training{nn}_{t:02d}_mask1.nii", m1)
            write(sub / "masks" / f"training{nn}_{t:02d}_mask2.nii", m2)
    return root


def write_msseg(
    root: Path, split: str, centers: dict[str, int], *, empty: set = frozenset()
) -> None:
    for cc, n in centers.items():
        for p in range(1, n + 1):
            flair, cons, _, brain = scan_arrays(int(cc) * 10 + p)
            pdir = root / split / f"Center_{cc}" / f"Patient_{p:02d}"
            write(pdir / "Preprocessed_Data" / "FLAIR_preprocessed.nii.gz", flair)
            if (cc, p) in empty:
                cons = np.zeros_like(cons)
            write(pdir / "Masks" / "Consensus.nii.gz", cons)
            for k in range(1, 8):
                write(
                    pdir / "Masks" / f"ManualSegmentation_{k}.nii.gz", np.roll(cons, k % 2, axis=0)
                )
            write(pdir / "Masks" / "Brain_Mask.nii.gz", brain)


@pytest.fixture
def msseg_root(tmp_path: Path) -> Path:
    root = tmp_path / "msseg"
    write_msseg(root, "Training", {"01": 2, "07": 1, "08": 1})
    write_msseg(root, "Testing", {"01": 1, "03": 2, "07": 2}, empty={("07", 2)})
    return root


def write_bids(root: Path) -> Path:
    """A BIDS dataset: sub-01 with two sessions, sub-02 and sub-03 without; consensus
    masks in derivatives/manual (space-orig for sub-01), rater masks of sub-02 in
    derivatives/raters, a brain mask for sub-03, participants.tsv placing sub-01 and
    sub-02 (sub-03 listed with n/a), and files that are no lesion mask of these scans."""
    items = [("01", "01", 1), ("01", "02", 2), ("02", None, 3), ("03", None, 4)]
    for sub, ses, seed in items:
        flair, cons, rater2, brain = scan_arrays(seed)
        rel = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "") / "anat"
        ents = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
        write(root / rel / f"{ents}_FLAIR.nii.gz", flair)
        write(root / rel / f"{ents}_T1w.nii.gz", flair)  # not a FLAIR
        space = "_space-orig" if sub == "01" else ""
        write(
            root / "derivatives" / "manual" / rel / f"{ents}{space}_desc-consensus_mask.nii.gz",
            cons,
        )
        if sub == "02":
            for k, mask in ((1, cons), (2, rater2)):
                write(
                    root / "derivatives" / "raters" / rel / f"{ents}_desc-rater{k}_mask.nii.gz",
                    mask,
                )
            # another space and another desc are not this scan's lesion masks
            write(
                root
                / "derivatives"
                / "raters"
                / rel
                / f"{ents}_space-MNI152NLin2009cAsym_desc-rater3_mask.nii.gz",
                mask,
            )
            write(root / "derivatives" / "raters" / rel / f"{ents}_desc-lesion_mask.nii.gz", mask)
        if sub == "03":
            write(
                root / "derivatives" / "manual" / rel / f"{ents}_desc-brain_mask.nii.gz",
                brain.astype(np.uint8),
            )
    (root / "dataset_description.json").write_text('{"Name": "tiny", "BIDSVersion": "1.10.0"}')
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsite\nsub-01\t34\tparis\nsub-02\t41\tlyon\nsub-03\tn/a\tn/a\n"
    )
    return root


@pytest.fixture
def bids_root(tmp_path: Path) -> Path:
    return write_bids(tmp_path / "bids")


@pytest.fixture
def mrms_root(tmp_path: Path) -> Path:
    root = tmp_path / "3dmrms"
    for p in (1, 2, 3):
        flair, cons, _, brain = scan_arrays(100 + p)
        d = root / f"patient{p:02d}"
        write(d / f"patient{p:02d}_FLAIR.nii.gz", flair)
        write(d / f"patient{p:02d}_consensus_gt.nii.gz", cons)
        write(d / f"patient{p:02d}_brainmask.nii.gz", brain)
    return root


@pytest.fixture(scope="session")
def notebooks() -> dict[str, Path]:
    """Every notebook of the project by name: ``{"03_train": <path>, ...}``."""
    return {path.stem: path for path in sorted(notebooks_dir().glob("*.ipynb"))}


@pytest.fixture
def run_notebook(notebooks, tmp_path):
    """Run a notebook by name with papermill, as the study does; returns the executed copy.

    ``run_notebook("04_evaluate", bundle=..., out_dir=...)`` executes the notebook with
    those parameters through :func:`msnb.study.notebooks.execute_notebook` (the one runner;
    the kernel works in the notebooks' folder) into ``<tmp_path>/executed/`` and returns the
    executed notebook as a dict. A failing cell raises ``papermill.PapermillExecutionError``.
    A run that has not ended after ``wall_s`` seconds (default :data:`NOTEBOOK_WALL_S`)
    raises :class:`NotebookHung`, its kernel killed: a hung kernel fails its test instead of
    stalling the suite.
    """
    # imported here: only the notebook tests need the study package (and papermill)
    from msnb.study.notebooks import execute_notebook

    def run(name: str, *, wall_s: float = NOTEBOOK_WALL_S, **parameters) -> dict:
        output = tmp_path / "executed" / f"{name}.ipynb"
        run_with_watchdog(
            lambda: execute_notebook(notebooks[name], output, parameters, timeout=wall_s),
            wall_s,
            what=f"{name}.ipynb",
        )
        return json.loads(output.read_text())

    return run


class NotebookHung(AssertionError):
    """A notebook run did not end in time (its kernel was killed)."""


def _kernel_children() -> list[int]:
    """Process ids of the IPython kernels this process started (Linux: /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"ipykernel" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def run_with_watchdog(job, wall_s: float, *, what: str):
    """``job()`` in a thread (in this context: the kernel environment goes with it); if it
    has not returned after ``wall_s`` seconds, the kernels this process started are killed
    and :class:`NotebookHung` is raised. nbclient's own cell timeout did not end every hang
    seen here: under load, papermill once waited 25 min on a widget cell of the tour whose
    kernel was idle (nbclient issue 312 reports the same on widget cells)."""
    import contextvars
    import signal
    import threading

    from jupyter_core.utils import _loop as jupyter_loop  # a context variable since 5.7

    result: dict = {}

    def target():
        # jupyter_core keeps its event loop in a context variable: a copied context would
        # share the loop of an earlier run, still running in a hung thread ("This event
        # loop is already running" on the retry), so this thread gets its own
        jupyter_loop.set(None)
        try:
            result["value"] = job()
        except BaseException as exc:  # handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)
    thread.start()
    thread.join(wall_s)
    if thread.is_alive():
        killed = _kernel_children()
        for pid in killed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        raise NotebookHung(f"{what}: not done after {wall_s:.0f} s; killed kernels {killed}")
    if "error" in result:
        raise result["error"]
    return result.get("value")


#: Seconds a notebook may run in the tests (the slowest, the tour, takes about 1-2 min alone
#: and a few times that on a loaded machine); also nbclient's timeout for one cell.
NOTEBOOK_WALL_S = 900


@pytest.fixture(autouse=True, scope="session")
def _isolated_outputs(tmp_path_factory):
    """Tests never write into the repository's outputs/ (or a user's MSNB_OUTPUTS)."""
    import os

    old = os.environ.get("MSNB_OUTPUTS")
    os.environ["MSNB_OUTPUTS"] = str(tmp_path_factory.mktemp("outputs"))
    os.environ.pop("MSNB_CACHE", None)
    yield
    if old is None:
        os.environ.pop("MSNB_OUTPUTS", None)
    else:
        os.environ["MSNB_OUTPUTS"] = old


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` unwritable for the block, also for root (``chattr +i``: root ignores
    modes); skips the test where neither works. Writable again afterwards."""
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):
        immutable = (
            subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        )
        if not immutable or os.access(folder, os.W_OK):
            folder.chmod(0o755)
            pytest.skip("cannot make a read-only folder here")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)
