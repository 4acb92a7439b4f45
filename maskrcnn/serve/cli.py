"""`maskrcnn serve ...` subcommands."""

from __future__ import annotations


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
