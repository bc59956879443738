"""``ring-async config show|validate``: print the effective configuration, or check a file."""

from __future__ import annotations

import argparse

from ring_async.config import load_config


def _show(args: argparse.Namespace) -> int:
    print(load_config(args.config).to_yaml(), end="")
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: valid (digest {config.digest()})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="show or validate a configuration")
    commands = parser.add_subparsers(dest="config_command", metavar="ACTION", parser_class=type(parser))
    commands.required = True
    show = commands.add_parser("show", help="print the effective configuration (defaults filled in) as YAML")
    show.add_argument("config", nargs="?", help="YAML file (default: the embedded default)")
    show.set_defaults(func=_show)
    validate = commands.add_parser("validate", help="check a YAML file; exit 1 with the reason when invalid")
    validate.add_argument("config", help="YAML file")
    validate.set_defaults(func=_validate)
