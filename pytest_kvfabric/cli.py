"""The `kvfabric` command. Each subcommand lives in pytest_kvfabric/commands/<name>.py and
exposes `register(subparsers)`, setting `func(args) -> int` on its parser. Usage errors and
bad input exit 2 with a one-line reason, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import KvFabricError

DESCRIPTION = ("Emulate prefill/decode GPUs and move their KV cache over real transports: list "
               "profiles, plan a scenario's transfers, run it between two local agents, compare reports.")

# Order = order in --help; each is a module of pytest_kvfabric/commands.
COMMANDS = ("profiles", "profile", "kvcache", "plan", "run", "compare", "validate", "calibrate", "report", "sweep", "lab")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage + 2 lines)
        sys.stderr.write(f"kvfabric: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvfabric", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"pytest_kvfabric.commands.{name}").register(sub)
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
    except BrokenPipeError:  # `kvfabric plan | head -1`: the reader left; leave quietly, as cat does
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by the pipe


def _silence_stdout() -> None:
    # Python would flush stdout again at exit and print a second BrokenPipeError: point it at /dev/null.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
