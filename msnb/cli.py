"""The ``msnb`` command line.

Each subcommand lives next to its domain code: a module listed in ``_COMMAND_MODULES``
exposes ``register_cli(subparsers)`` that adds its parser and sets ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from msnb import __version__

__all__ = [
    "build_parser",
    "main",
]

# Modules that contribute subcommands (imported lazily, so `msnb scans` does not import torch).
_COMMAND_MODULES = {
    "scans": "msnb.datasets",
    "phantom": "msnb.phantom",
    "segment": "msnb.predict",
    "study": "msnb.study.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msnb", description="MS lesion segmentation generalization study toolkit"
    )
    parser.add_argument("--version", action="version", version=f"msnb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _COMMAND_MODULES.items():
        if command is not None and name != command:
            sub.add_parser(name, help=f"(see `msnb {name} --help`)")
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        if hasattr(mod, "register_cli"):
            mod.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in _COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"msnb {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
