"""`maskrcnn model ...` subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import sys


def _summary(args: argparse.Namespace) -> int:
    from maskrcnn.config import get_config
    from maskrcnn.model.mask_rcnn import MaskRCNN
    from maskrcnn.model.summary import format_summary

    cfg = get_config(args.preset, args.overrides)
    # Parameter counts do not depend on the image size: build on a small canvas to stay fast.
    small = dataclasses.replace(cfg, PREPROC=dataclasses.replace(cfg.PREPROC, PAD_SIZE=(128, 128), MAX_SIZE=128))
    model = MaskRCNN(small).build_for_inputs()
    sys.stdout.write(f"Mask R-CNN, preset {cfg.PRESET}, {cfg.NUM_CLASSES} classes\n{format_summary(model)}\n")
    return 0


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    from maskrcnn.cli import add_config_arguments

    parser = commands.subcommand("model", "summary", "print the model's modules with parameter counts", _summary)
    add_config_arguments(parser)
