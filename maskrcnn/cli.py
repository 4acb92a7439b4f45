"""The ``maskrcnn`` command: one subcommand per stage.

Each stage package owns its subcommands in a ``cli.py`` with ``register(commands)``; this module
only assembles them, so ``maskrcnn --help`` starts fast (TensorFlow is imported inside handlers).
A ``UserError`` anywhere becomes a one-line ``error: ...`` message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

from maskrcnn import __version__
from maskrcnn.errors import UserError
from maskrcnn.utils.logs import setup_logging

log = logging.getLogger("maskrcnn")

_COMMAND_MODULES = (
    "maskrcnn.cli",            # config
    "maskrcnn.data.cli",       # data synth | download | convert
    "maskrcnn.model.cli",      # model summary
    "maskrcnn.train.cli",      # train
    "maskrcnn.evaluate.cli",   # evaluate
    "maskrcnn.serve.cli",      # serve | predict | model package
    "maskrcnn.k8s.cli",        # k8s train | deploy
    "maskrcnn.pipeline.cli",   # pipeline compile | run | submit | schedule
)


_GROUP_HELP = {
    "config": "show the effective config",
    "data": "generate, download, mirror and convert datasets",
    "model": "model summary and SageMaker packaging",
    "k8s": "run training as an MPIJob and deploy the server on Kubernetes",
    "pipeline": "compile, run locally, submit and schedule the Kubeflow pipeline",
}


class Commands:
    """Hands out argparse parsers for ``maskrcnn NAME`` and ``maskrcnn GROUP NAME``."""

    def __init__(self, subparsers: argparse._SubParsersAction):
        self._top = subparsers
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def command(self, name: str, help: str, handler: Callable[[argparse.Namespace], int | None]) -> argparse.ArgumentParser:
        parser = self._top.add_parser(
            name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        parser.set_defaults(handler=handler)
        return parser

    def subcommand(
        self, group: str, name: str, help: str, handler: Callable[[argparse.Namespace], int | None]
    ) -> argparse.ArgumentParser:
        if group not in self._groups:
            help_text = _GROUP_HELP.get(group, f"{group} commands")
            group_parser = self._top.add_parser(group, help=help_text, description=help_text)
            self._groups[group] = group_parser.add_subparsers(dest=f"{group}_command", required=True, metavar="COMMAND")
        parser = self._groups[group].add_parser(
            name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        parser.set_defaults(handler=handler)
        return parser


def add_config_arguments(parser: argparse.ArgumentParser, default_preset: str = "r50-fpn-1x") -> None:
    """``--preset P`` and trailing ``KEY=VALUE`` overrides, shared by every command that takes a config."""
    from maskrcnn.config import PRESETS

    parser.add_argument("--preset", default=default_preset, choices=list(PRESETS), help="named config preset")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. TRAIN.MAX_STEPS=100")


def _config_show(args: argparse.Namespace) -> int:
    from maskrcnn.config import get_config, to_yaml

    sys.stdout.write(to_yaml(get_config(args.preset, args.overrides)))
    return 0


def register(commands: Commands) -> None:
    parser = commands.subcommand("config", "show", "print the effective config (preset + overrides)", _config_show)
    add_config_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskrcnn",
        description="Mask R-CNN on COCO: data, training, evaluation, serving, Kubernetes and Kubeflow pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        code = args.handler(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
