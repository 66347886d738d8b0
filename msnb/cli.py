"""The ``msnb`` command line.

Each subcommand lives next to its domain code: a module listed in ``_COMMAND_MODULES``
exposes ``register_cli(subparsers)`` that adds its parser and sets ``func``.

Errors of bad input or of the environment are msnb's own classes, each naming the file
(or option) and the problem: :class:`ValueError` subclasses (``NiftiError``,
``DatasetError``, ``BundleError``, ``DeviceError``, ``SliceStoreError``...),
``FileNotFoundError`` and :class:`msnb.nifti.OutputError`. ``main`` prints them as one
line and returns 1; anything else is a bug and keeps its traceback. msnb's own warnings
are printed as one line too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from msnb import __version__

__all__ = [
    "build_parser",
    "main",
]

# Modules that contribute subcommands (imported lazily, so `msnb scans` does not import torch).
_COMMAND_MODULES = {
    "scans": "msnb.datasets",
    "phantom": "msnb.phantom",
    "segment": "msnb.segment",
    "evaluate": "msnb.external",
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


def _one_line_warnings(command: str):
    """A ``warnings.showwarning`` printing msnb's own warnings as one line each."""
    package = Path(__file__).resolve().parent
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if package in Path(filename).resolve().parents:
            print(f"msnb {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


#: What an interrupted command leaves, told on its one line.
_AFTER_INTERRUPT = {
    "study": "the jobs that finished are kept: run the same command again to resume",
    "segment": "the outputs of the inputs that finished are kept (--skip-existing resumes)",
    "phantom": "nothing of the unfinished phantom is kept",
}


def main(argv: list[str] | None = None) -> int:
    from msnb.nifti import OutputError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in _COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command)
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OutputError) as exc:
        print(f"msnb {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line, not the traceback of whatever was running
        hint = _AFTER_INTERRUPT.get(args.command)
        print(f"msnb {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it


if __name__ == "__main__":
    sys.exit(main())
