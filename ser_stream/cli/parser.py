"""The ``ser-stream`` parser: the global flags, and each command group's commands."""

from __future__ import annotations

import argparse

from ser_stream.cli import cluster, models, stage, tools, up

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """Every command; each sets ``run`` (its function) and ``one_thread`` (see ``main``)."""
    parser = argparse.ArgumentParser(
        prog="ser-stream", description="Real-time speech emotion recognition."
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(one_thread=False)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    models.add_commands(commands)
    up.add_commands(commands)
    tools.add_commands(commands)
    stage.add_commands(commands)
    cluster.add_commands(commands)
    return parser
