"""``python -m rsca_core``: one CLI over the engine's functions.

Each feature module that offers commands defines ``add_cli(subparsers)``; it registers its
sub-commands with ``parser.set_defaults(func=callable)``, where ``callable(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

#: Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "rsca_core.cli_core",
    "rsca_core.simulate",
    "rsca_core.apogee",
    "rsca_core.diagnostics",
    "rsca_core.experiments_cli",
    "rsca_core.siblings",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsca" if Path(sys.argv[0]).name == "rsca" else "python -m rsca_core",
        description="RSCA Lab: measure the chemical likeness of stars from their spectra "
        "(relevant scaled component analysis and the doppelganger rate).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # feature not installed in this build
            raise
        mod.add_cli(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
