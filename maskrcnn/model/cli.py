"""`maskrcnn model ...` subcommands."""

from __future__ import annotations

import argparse
import sys


def _summary(args: argparse.Namespace) -> int:
    from maskrcnn.config import get_config
    from maskrcnn.model.mask_rcnn import MaskRCNN
    from maskrcnn.model.summary import format_summary

    cfg = get_config(args.preset, args.overrides)
    model = MaskRCNN(cfg).build_for_inputs()
    sys.stdout.write(f"Mask R-CNN, preset {cfg.PRESET}, {cfg.NUM_CLASSES} classes\n{format_summary(model)}\n")
    return 0


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    from maskrcnn.cli import add_config_arguments

    parser = commands.subcommand("model", "summary", "print the model's modules with parameter counts", _summary)
    add_config_arguments(parser)
