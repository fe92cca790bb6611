"""The `kvfabric` command. Each subcommand lives in pytest_kvfabric/commands/<name>.py and
exposes `register(subparsers)`, setting `func(args) -> int` on its parser. Usage errors and
bad input exit 2 with a one-line reason, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import KvFabricError

# Order = order in --help. A module that is missing (not yet written) is skipped.
COMMANDS = ("profiles", "profile", "kvcache", "plan", "run", "compare", "report", "sweep")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + 2 lines)
        sys.stderr.write(f"kvfabric: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvfabric", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pytest_kvfabric.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pytest_kvfabric.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KvFabricError as exc:
        sys.stderr.write(f"kvfabric: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
