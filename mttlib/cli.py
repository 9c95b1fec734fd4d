"""The kit's command line: ``python -m mttlib <command> [options]``.

Each command lives in the module that owns the idea and exposes ``cli(argv) -> int``; this file
only dispatches, so ``python -m mttlib experts --help`` shows the options of
:func:`mttlib.experts.cli`.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "data": ("mttlib.data", "inspect a dataset: sizes, classes, normalisation"),
    "experts": ("mttlib.experts", "train expert trajectories on real data"),
    "distill": ("mttlib.distill", "distill a synthetic set by matching trajectories"),
    "evaluate": ("mttlib.evaluate", "train fresh networks on a set and report test accuracy"),
    "texture": ("mttlib.texture", "distill tileable textures and export PNGs"),
    "demo": ("mttlib.demo", "run the notebooks at classroom size and write a report"),
}


def _usage() -> str:
    lines = ["usage: python -m mttlib <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "python -m mttlib <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to the command's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.cli(rest) or 0)
