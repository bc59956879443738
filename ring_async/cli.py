"""The ``ring-async`` command line.

Each domain registers its own sub-commands through a ``register(subparsers)`` function (listed in ``_COMMANDS``), so
this file only wires them and turns errors into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from ring_async.errors import RingAsyncError

# Modules that contribute sub-commands; each has ``register(subparsers) -> None`` and sets ``func`` on its parsers.
_COMMANDS = (
    "ring_async.commands.config_cmd",
    "ring_async.commands.bench_cmd",
    "ring_async.commands.demo_cmd",
    "ring_async.commands.sft_cmd",
    "ring_async.commands.verify_cmd",
    "ring_async.commands.run_cmd",
)

EXIT_USAGE = 2
EXIT_ERROR = 1


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints the whole usage on a bad argument; a user (or a script) needs the one line that says why."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="ring-async", description="Asynchronous RL post-training with C3PO fixed-token-budget steps."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    subparsers.required = True
    for module in _COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return int(func(args) or 0)
    except RingAsyncError as err:
        sys.stderr.write(f"ring-async: error: {err}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("ring-async: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
