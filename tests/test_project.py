"""Project consistency: dependency lists, notebooks stripped, paths overridable."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from msnb import paths

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from the PyPI ones
CONDA_TO_PIP = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]}
    pip_names |= {_name(r) for r in project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {
        CONDA_TO_PIP.get(_name(d), _name(d)) for d in env["dependencies"] if isinstance(d, str)
    }
    conda -= CONDA_ONLY
    assert conda == pip_names, (
        f"only in environment.yml: {conda - pip_names}; only in pyproject: {pip_names - conda}"
    )


def test_torch_pins_live_in_constraints_only():
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\d", pins, re.M) and re.search(r"^torchvision==\d", pins, re.M)
    project = (ROOT / "pyproject.toml").read_text()
    assert "torch==" not in project and "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_notebooks_are_committed_without_outputs_and_with_parameters():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for nb_path in notebooks:
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
            nb_path.name
        )
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), (
            nb_path.name
        )


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MSNB_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("MSNB_OUTPUTS", str(tmp_path / "o"))
    monkeypatch.delenv("MSNB_CACHE", raising=False)
    assert paths.data_root() == tmp_path / "d"
    assert paths.outputs_root() == tmp_path / "o"
    assert paths.cache_root() == tmp_path / "o" / "cache"
    monkeypatch.delenv("MSNB_DATA")
    assert paths.data_root() == ROOT / "data"
