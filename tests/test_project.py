"""Project consistency: torch pins, notebooks stripped, paths overridable (the dependency
lists, locks and environment.yml: tests/test_install.py)."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

from msnb import paths

ROOT = Path(__file__).resolve().parent.parent


def test_torch_pins_live_in_constraints_only():
    """One pin per platform in constraints.txt, none in pyproject.toml; `make lock` reads them
    (tests/test_install.py checks that the locks carry them)."""
    pins = (ROOT / "constraints.txt").read_text()
    for arch in ("x86_64", "aarch64"):
        for name in ("torch", "torchvision"):
            line = rf'^{name}==\d[\d.]*; platform_machine == "{arch}"$'
            assert len(re.findall(line, pins, re.M)) == 1, (name, arch)
    project = (ROOT / "pyproject.toml").read_text()
    assert (
        "torch==" not in project
        and "--constraint constraints.txt" in (ROOT / "Makefile").read_text()
    )


def _code(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _is_parameters(cell: dict) -> bool:
    return "parameters" in cell.get("metadata", {}).get("tags", [])


def test_notebooks_are_stripped_thin_and_titled(notebooks):
    assert len(notebooks) == 8
    for name, path in notebooks.items():
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "msnb", name
        code = _code(nb)
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), name
        for c in code:
            if not _is_parameters(c):
                assert len("".join(c["source"]).splitlines()) <= 10, (name, c["source"])
        title = "".join(nb["cells"][0]["source"]).splitlines()[0]
        assert nb["cells"][0]["cell_type"] == "markdown" and title.startswith("# "), name
        assert "?" in title, name
        assert any(
            c["cell_type"] == "markdown" and "".join(c["source"]).strip() == "## Setup"
            for c in nb["cells"]
        ), name


# papermill's typed form, one parameter a line: `size: int = 64  # slice side in pixels`
PARAMETER_LINE = re.compile(r"^\w+: [\w\[\], ]+ = \S.*?  # \S.*$")


def test_notebook_parameters_are_typed_literals_with_a_comment(notebooks):
    import papermill as pm

    for name, path in notebooks.items():
        nb = json.loads(path.read_text())
        cells = [c for c in _code(nb) if _is_parameters(c)]
        assert len(cells) == 1, name
        lines = "".join(cells[0]["source"]).splitlines()
        for line in lines:
            assert PARAMETER_LINE.match(line), f"{name}: {line}"
            assert len(line) <= 100, f"{name}: {line}"  # so ruff format keeps it on one line
        inspected = pm.inspect_notebook(str(path))
        assert len(inspected) == len(lines), name  # papermill parses every line
        for param, info in inspected.items():
            assert info["inferred_type_name"] != "None" and info["help"], (name, param)
            ast.literal_eval(info["default"])
            if info["default"] in ('""', "{}"):  # always means: not given, use the default
                assert f"{info['default']} (not given): " in info["help"], (name, param)


def _msnb_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("msnb"):
            if node.module == "msnb":
                names |= {f"msnb.{a.name}" for a in node.names}
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("msnb")}
    return names


def test_notebooks_call_domain_modules_never_the_study(notebooks):
    for name, path in notebooks.items():
        nb = json.loads(path.read_text())
        source = "\n".join("".join(c["source"]) for c in _code(nb))
        imported = _msnb_imports(source)
        assert imported, name
        assert not any(m.split(".")[1] in ("study", "cli") for m in imported), (name, imported)
        for module in imported:
            importlib.import_module(module)  # every module a notebook names exists


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MSNB_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("MSNB_OUTPUTS", str(tmp_path / "o"))
    monkeypatch.delenv("MSNB_CACHE", raising=False)
    assert paths.data_root() == tmp_path / "d"
    assert paths.outputs_root() == tmp_path / "o"
    assert paths.cache_root() == tmp_path / "o" / "cache"
    monkeypatch.delenv("MSNB_DATA")
    assert paths.data_root() == ROOT / "data"


def test_every_msnb_name_a_notebook_uses_exists(notebooks):
    """`module.NAME` in a notebook names something the msnb module has (a name moved to
    another module, or an import a linter dropped as unused, fails here, not in a study)."""
    for name, path in notebooks.items():
        nb = json.loads(path.read_text())
        tree = ast.parse("\n".join("".join(c["source"]) for c in _code(nb)))
        modules = {
            alias.asname or alias.name: f"msnb.{alias.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "msnb"
            for alias in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = modules.get(node.value.id)
                if module:
                    assert hasattr(importlib.import_module(module), node.attr), (
                        f"{name}: {node.value.id}.{node.attr} is not in {module}"
                    )
