"""msnb's modules import one way only, bottom to top (README: "How the code is laid out").

An AST walk over every import in ``msnb/``, at module level or inside a function, fails
on any import that goes up a layer, on any import cycle, and on any module missing from
the layer table (a new module must be placed in a layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MSNB = Path(__file__).resolve().parent.parent / "msnb"

#: Bottom to top. A module may import modules of its own layer or of layers below it.
LAYERS = {
    "core": ("msnb", "msnb.paths", "msnb.files", "msnb.nifti", "msnb.records", "msnb.docs"),
    "data": (
        "msnb.bids",
        "msnb.masks",
        "msnb.datasets",
        "msnb.preprocess",
        "msnb.phantom",
        "msnb.sources",
    ),
    "model": (
        "msnb.device",
        "msnb.recipe",
        "msnb.normalize",
        "msnb.slices",
        "msnb.models",
        "msnb.bundle",
        "msnb.onnxrt",
        "msnb.metrics",
        "msnb.external",
        "msnb.predict",
        "msnb.segment",
        "msnb.train",
    ),
    "analysis": ("msnb.agreement", "msnb.stats", "msnb.explore", "msnb.paper"),
    "presentation": ("msnb.viz", "msnb.widgets", "msnb.report"),
    "study": ("msnb.study",),
    "cli": ("msnb.cli",),
}
RANK = {name: i for i, name in enumerate(LAYERS)}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str, layers: dict = LAYERS) -> str | None:
    """The layer of ``module``: the one listing it or its closest listed package."""
    best = None
    for layer, names in layers.items():
        for name in names:
            # a listed package holds its submodules; the top package holds only itself
            if module == name or ("." in name and module.startswith(name + ".")):
                if best is None or len(name) > len(best[1]):
                    best = (layer, name)
    return best[0] if best else None


def imports_of(path: Path, package: str = "msnb") -> list[tuple[int, str]]:
    """(line, imported module) for every import of ``package`` in a file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != package:
                continue
            if node.module == package:  # from msnb import stats -> msnb.stats
                found += [(node.lineno, f"{package}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def check_tree(root: Path, layers: dict = LAYERS) -> list[str]:
    """Every layering problem in the package at ``root``, as readable lines."""
    rank = {name: i for i, name in enumerate(layers)}
    problems, graph = [], {}
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    for mod, path in modules.items():
        src = layer_of(mod, layers)
        if src is None:
            problems.append(f"{mod}: not in any layer (add it to the layer table)")
            continue
        for line, target in imports_of(path, root.name):
            if target not in modules:  # a name, not a module: `from msnb import __version__`
                target = target.rsplit(".", 1)[0] if target.rsplit(".", 1)[0] in modules else target
            dst = layer_of(target, layers)
            if dst is not None and rank[dst] > rank[src]:
                problems.append(f"{path}:{line}: {mod} ({src}) imports {target} ({dst}): upward")
            if target != mod and target in modules and not mod.startswith(target + "."):
                graph.setdefault(mod, set()).add(target)
    problems += [f"import cycle: {' -> '.join(c)}" for c in find_cycles(graph)]
    return problems


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (depth-first search)."""
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_msnb_imports_only_go_down():
    problems = check_tree(MSNB)
    assert not problems, "\n".join(problems)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


TOY_LAYERS = {"core": ("pkg", "pkg.base"), "model": ("pkg.train",), "top": ("pkg.app",)}


def test_checker_catches_an_upward_import_even_inside_a_function(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/base.py": "def f():\n    from pkg.train import fit\n",
            "pkg/train.py": "from pkg import base\n",
            "pkg/app.py": "import pkg.train\nfrom pkg import base\n",
        },
    )
    problems = check_tree(pkg, TOY_LAYERS)
    assert any("pkg.base (core) imports pkg.train (model): upward" in p for p in problems)
    assert any(p.startswith("import cycle: pkg.base -> pkg.train -> pkg.base") for p in problems)
    assert len(problems) == 2


def test_checker_catches_unplaced_modules_and_passes_a_clean_tree(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/base.py": "import os\n",
            "pkg/train.py": "from pkg.base import os\n",
            "pkg/app.py": "from pkg import train\n",
        },
    )
    assert check_tree(pkg, TOY_LAYERS) == []
    (pkg / "extra.py").write_text("")
    assert check_tree(pkg, TOY_LAYERS) == [
        "pkg.extra: not in any layer (add it to the layer table)"
    ]


@pytest.mark.parametrize(
    "module", ["msnb.phantom.generate", "msnb.stats.tables", "msnb.study.jobs"]
)
def test_subpackages_take_their_package_layer(module):
    assert layer_of(module) == layer_of(module.rsplit(".", 1)[0])
