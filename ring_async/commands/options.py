"""The options every command that runs something shares: ``--config FILE`` and ``--set KEY=VALUE`` overrides."""

from __future__ import annotations

import argparse
import logging

import yaml

from ring_async.config import RingConfig, load_config
from ring_async.errors import ConfigError


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (default: the embedded default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. sft.epochs=2 (repeatable)")


def config_from_args(args: argparse.Namespace) -> RingConfig:
    """The config named by ``--config`` with the ``--set`` overrides (and ``--run-dir``, where a command has it)."""
    # Cache hits, skipped examples and out-of-band selections are worth a line on stderr.
    logging.basicConfig(level=logging.WARNING, format="ring-async: %(message)s")
    logging.getLogger("ring_async").setLevel(logging.INFO)
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. sft.epochs=2")
        overrides[key] = yaml.safe_load(value)
    if getattr(args, "run_dir", None):
        overrides["run.run_dir"] = args.run_dir
    return load_config(args.config, overrides)
