"""A reproducible install (issue 12): true dependency floors, one lock per platform that
`make setup` installs, and a conda environment naming the same distributions as pyproject.

Tests marked ``network`` ask the package registry (PyPI) through uv, as CI can.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("x86_64", "aarch64")
# The torch-free stack that msnb.stats and its tests import: installed at its floors and
# run against tests/test_stats.py (STATS_TESTS) in a throwaway venv.
STATS_STACK = (
    "numpy",
    "scipy",
    "pandas",
    "tabulate",
    "matplotlib",
    "seaborn",
    "pingouin",
    "nibabel",
    "tqdm",
    "pyyaml",
    "pytest",
)
STATS_TESTS = (
    "wilcoxon or paired_test_drops or mann_whitney or anova or tukey or write_tables"
    " or heatmap or identifiers"
)
# Used through another package's API rather than imported: distribution -> the use.
IMPLICIT_USES = {"tabulate": "to_markdown(", "onnx": "torch.onnx.export("}

# Every conda-forge name environment.yml may use, and the PyPI distribution it installs
# (None: not a Python distribution msnb depends on). Checked by hand against each
# feedstock's recipe; a name missing here fails the test until someone checks it.
CONDA_FORGE_TO_PYPI = {
    "python": None,
    "pip": None,
    "huggingface_hub": "huggingface-hub",
    "safetensors": "safetensors",
    "nibabel": "nibabel",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "tabulate": "tabulate",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
    "pingouin": "pingouin",
    "papermill": "papermill",
    "nbformat": "nbformat",
    "nbconvert-core": "nbconvert",  # "nbconvert" adds pandoc and TeX for PDF export
    "jupyter_client": "jupyter-client",
    "jupyter_core": "jupyter-core",
    "traitlets": "traitlets",
    "jupyterlab": "jupyterlab",
    "ipykernel": "ipykernel",
    "ipython": "ipython",
    "ipywidgets": "ipywidgets",
    "simpleitk": "simpleitk",
    "nilearn": "nilearn",
    "tqdm": "tqdm",
    "pyyaml": "pyyaml",
    "dask": "dask",
    "distributed": "distributed",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "pytest": "pytest",
    "ruff": "ruff",
    "playwright-python": "playwright",
    "uv": "uv",
    "psutil": "psutil",
    "packaging": "packaging",
}
# conda-forge names that look right and are not: the reason, shown as the failure.
CONDA_FORGE_TRAPS = {
    "playwright": "conda-forge's playwright is the Node.js CLI (npm); the Python package is "
    "playwright-python",
    "pytorch": "conda-forge's pytorch builds cannot follow constraints.txt's pins; torch and "
    "the packages built on it come from PyPI in the pip section",
}
TORCH_STACK = {"torch", "torchvision", "timm", "segmentation-models-pytorch"}


# ---------------------------------------------------------------------------- helpers


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]["test"]
    return [Requirement(r) for r in (*project["dependencies"], *extras)]


def _runtime_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


def _floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"pyproject.toml: {req} needs one '>=' floor"
    return floors[0]


def _pins(text: str, source: str) -> dict[str, str]:
    """``name==version`` lines of a lock or of uv's output (comments and blanks skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"{source}: not an exact pin: {line!r}"
        pins[canonicalize_name(m[1])] = m[2]
    return pins


def _lock(arch: str) -> dict[str, str]:
    path = ROOT / "requirements" / f"lock-{arch}.txt"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run `make lock`"
    return _pins(path.read_text(), str(path.relative_to(ROOT)))


def _constraint_pins(arch: str) -> dict[str, str]:
    env = {**default_environment(), "platform_machine": arch}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                (spec,) = req.specifier
                pins[canonicalize_name(req.name)] = spec.version
    return pins


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _uv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}


def _lowest_direct(inputs: list[str], arch: str, cwd: Path) -> dict[str, str]:
    """uv's resolution of ``inputs`` with every direct requirement at its lowest."""
    cmd = [_uv(), "pip", "compile", *inputs, "--resolution", "lowest-direct"]
    cmd += ["--python-version", "3.11", "--python-platform", f"{arch}-manylinux_2_28"]
    cmd += ["--no-header", "--no-annotate", "--quiet"]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_uv_env())
    assert run.returncode == 0, f"uv could not resolve the floors:\n{run.stderr[-3000:]}"
    return _pins(run.stdout, "uv pip compile")


def _not_at_floor(reqs: list[Requirement], resolved: dict[str, str]) -> list[str]:
    wrong = []
    for req in reqs:
        got = resolved.get(canonicalize_name(req.name))
        if got is None or Version(got) != _floor(req):
            wrong.append(f"{req}: the lowest that resolves with the rest is {got}")
    return wrong


# ---------------------------------------------------------------------- declared imports


def _imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def _undeclared(files: dict[Path, str], declared: set[str], local: set[str]) -> list[str]:
    providers = md.packages_distributions()
    problems = []
    for path, source in files.items():
        for module in sorted(_imported_modules(source) - local - set(sys.stdlib_module_names)):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if not dists & declared:
                where = path.relative_to(ROOT)
                problems.append(f"{where} imports {module} (from {sorted(dists)}): undeclared")
    return problems


def _implicit(files: dict[Path, str], declared: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} uses {use} and needs {dist}"
        for path, source in files.items()
        for dist, use in IMPLICIT_USES.items()
        if use in source and dist not in declared
    ]


def test_every_import_is_a_declared_dependency():
    runtime = _runtime_names()
    everything = {canonicalize_name(r.name) for r in _project_requirements()}
    package = {p: p.read_text() for p in sorted((ROOT / "msnb").rglob("*.py"))}
    package |= {p: _notebook_code(p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    tests = {p: p.read_text() for p in sorted((ROOT / "tests").glob("*.py"))}
    local_tests = {"msnb", *(p.stem for p in tests)}
    problems = _undeclared(package, runtime, {"msnb"}) + _implicit(package, runtime)
    problems += _undeclared(tests, everything, local_tests)
    assert not problems, "pyproject.toml misses:\n" + "\n".join(problems)


# --------------------------------------------------------------------------------- locks


def test_each_platform_lock_pins_every_requirement_and_its_torch():
    for arch in PLATFORMS:
        lock = _lock(arch)
        for req in _project_requirements():
            name = canonicalize_name(req.name)
            assert name in lock, f"requirements/lock-{arch}.txt lacks {name}: run `make lock`"
            assert req.specifier.contains(lock[name], prereleases=True), (
                f"requirements/lock-{arch}.txt pins {name}=={lock[name]}, outside {req}"
            )
        pins = _constraint_pins(arch)
        assert set(pins) == {"torch", "torchvision"}, f"constraints.txt for {arch}: {pins}"
        for name, version in pins.items():
            assert lock[name] == version, (
                f"requirements/lock-{arch}.txt: {name}=={lock[name]}, constraints.txt says {version}"
            )
        assert "pip" in lock, f"requirements/lock-{arch}.txt lacks the installer (pip)"
    assert _constraint_pins("x86_64")["torch"] != _constraint_pins("aarch64")["torch"]


def test_the_locks_agree_but_for_the_torch_stack():
    x86, arm = _lock("x86_64"), _lock("aarch64")
    direct = {canonicalize_name(r.name) for r in _project_requirements()} - TORCH_STACK
    differ = {n: (x86[n], arm[n]) for n in direct if x86[n] != arm[n]}
    assert not differ, f"the two locks pin these differently: {differ}"


def _closure(names: set[str], extras: dict[str, set[str]]) -> set[str]:
    """Installed distributions reachable from ``names`` through their requirements."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # reported by the caller: in the closure, not installed
        for line in requires:
            req = Requirement(line)
            wanted = extras.get(name, set()) | {""}
            if req.marker and not any(
                req.marker.evaluate({**default_environment(), "extra": e}) for e in wanted
            ):
                continue
            dep = canonicalize_name(req.name)
            extras.setdefault(dep, set()).update(req.extras)
            todo.append(dep)
    return seen


def test_the_installed_environment_is_this_platforms_lock():
    lock = _lock(platform.machine())
    wrong = {}
    for name, version in lock.items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"lock vs installed (run `make setup`): {wrong}"
    direct = {canonicalize_name(r.name) for r in _project_requirements()}
    extras = {canonicalize_name(r.name): set(r.extras) for r in _project_requirements()}
    unlocked = _closure(direct, extras) - set(lock)
    assert not unlocked, f"installed as dependencies but not in the lock: {sorted(unlocked)}"


@pytest.mark.slow
@pytest.mark.network
def test_the_locks_are_what_make_lock_writes(tmp_path):
    for arch in PLATFORMS:
        shutil.copy(ROOT / "requirements" / f"lock-{arch}.txt", tmp_path)
    cmd = ["make", "-s", "--no-print-directory", "lock", f"LOCK_DIR={tmp_path}", f"UV={_uv()}"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_uv_env())
    assert run.returncode == 0, run.stderr[-3000:]
    for arch in PLATFORMS:
        committed = (ROOT / "requirements" / f"lock-{arch}.txt").read_text()
        assert (tmp_path / f"lock-{arch}.txt").read_text() == committed, (
            f"requirements/lock-{arch}.txt is stale: run `make lock`"
        )


# -------------------------------------------------------------------------------- floors


@pytest.mark.slow
@pytest.mark.network
def test_every_floor_resolves_together_at_its_lowest(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "README.md").write_text("")  # pyproject's readme, for uv's metadata build
    reqs = _project_requirements()
    for arch in PLATFORMS:
        resolved = _lowest_direct(["pyproject.toml", "--extra", "test"], arch, tmp_path)
        wrong = _not_at_floor(reqs, resolved)
        assert not wrong, f"pyproject.toml floors that cannot be installed ({arch}):\n" + (
            "\n".join(wrong)
        )


@pytest.mark.slow
@pytest.mark.network
def test_the_statistics_tests_pass_on_the_floors(tmp_path):
    reqs = [r for r in _project_requirements() if canonicalize_name(r.name) in STATS_STACK]
    assert len(reqs) == len(STATS_STACK), "STATS_STACK names a distribution pyproject lacks"
    (tmp_path / "floors.in").write_text("\n".join(map(str, reqs)) + "\n")
    resolved = _lowest_direct(["floors.in"], platform.machine(), tmp_path)
    assert not _not_at_floor(reqs, resolved), _not_at_floor(reqs, resolved)
    (tmp_path / "floors.txt").write_text("".join(f"{n}=={v}\n" for n, v in resolved.items()))
    venv, env = tmp_path / "venv", _uv_env()
    base = getattr(sys, "_base_executable", sys.executable)
    for cmd in (
        [_uv(), "venv", "--quiet", "--python", base, str(venv)],
        [_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
        + ["--only-binary", ":all:", "--no-deps", "-r", str(tmp_path / "floors.txt")],
    ):
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
    cmd = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += ["tests/test_stats.py", "-k", STATS_TESTS]
    run = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    passed = re.search(r"(\d+) passed", summary)
    assert run.returncode == 0 and passed and int(passed[1]) >= 8, (
        f"tests/test_stats.py on the floors {resolved}:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
    )
    shutil.rmtree(venv)


# ------------------------------------------------------------------------ environment.yml


def _environment() -> tuple[list[str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pips) == 1, "environment.yml: one pip section"
    return conda, pips[0]


def _conda_name(spec: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", spec.strip())
    assert m, f"environment.yml: cannot read {spec!r}"
    return m[1].lower(), m[2].strip()


def _environment_distributions() -> tuple[dict[str, str], list[str]]:
    """PyPI distribution -> its version spec in environment.yml (conda or pip section), and
    the problems found on the way."""
    conda, pip = _environment()
    found: dict[str, str] = {}
    problems = []
    for spec in conda:
        name, version = _conda_name(spec)
        if name in CONDA_FORGE_TRAPS:
            problems.append(f"{name}: {CONDA_FORGE_TRAPS[name]}")
        elif name not in CONDA_FORGE_TO_PYPI:
            problems.append(
                f"conda-forge's {name!r} is not in CONDA_FORGE_TO_PYPI (tests/test_install.py): "
                "check which PyPI distribution its feedstock installs"
            )
        elif (dist := CONDA_FORGE_TO_PYPI[name]) is not None:
            problems += [f"{dist} twice"] if dist in found else []
            found[dist] = version
    for line in pip:
        if not line.startswith("-"):
            req = Requirement(line)
            dist = canonicalize_name(req.name)
            problems += [f"{dist} twice"] if dist in found else []
            found[dist] = str(req.specifier)
    return found, problems


def test_environment_yml_installs_the_distributions_of_pyproject():
    found, problems = _environment_distributions()
    reqs = {canonicalize_name(r.name): r for r in _project_requirements()}
    problems += [f"{d}: not in pyproject.toml" for d in sorted(set(found) - set(reqs))]
    problems += [f"{d}: missing (pyproject.toml has it)" for d in sorted(set(reqs) - set(found))]
    problems += [
        f"{dist}: {spec!r}, pyproject.toml says {reqs[dist].specifier!s}"
        for dist, spec in found.items()
        if dist in reqs and spec != str(reqs[dist].specifier)
    ]
    assert not problems, "environment.yml:\n" + "\n".join(problems)


def test_environment_yml_pins_torch_and_installs_the_test_extras():
    conda, pip = _environment()
    assert "-c constraints.txt" in pip, "environment.yml: pip section without constraints.txt"
    from_pip = {canonicalize_name(Requirement(x).name) for x in pip if not x.startswith("-")}
    assert TORCH_STACK <= from_pip, f"environment.yml: {TORCH_STACK - from_pip} not from pip"
    assert pip.index("-c constraints.txt") < min(
        i for i, x in enumerate(pip) if not x.startswith("-")
    ), "environment.yml: -c constraints.txt must come before the requirements it pins"
    assert "-e .[test]" in pip, "environment.yml: msnb without its test extras"
    assert any(_conda_name(s) == ("python", "=3.11") for s in conda), conda
