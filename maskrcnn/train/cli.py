"""`maskrcnn train --data SHARDS_DIR --model-dir DIR [--preset P] [KEY=VALUE ...]`."""

from __future__ import annotations

import argparse
import json
import sys


def _train(args: argparse.Namespace) -> int:
    from maskrcnn.config import get_config
    from maskrcnn.train.loop import SIGTERM_EXIT_CODE, run_training

    cfg = get_config(args.preset, args.overrides)
    summary = run_training(cfg, args.data, args.model_dir)
    brief = {k: summary[k] for k in ("steps", "total_steps", "global_batch", "world_size", "images_per_second",
                                     "wall_seconds", "interrupted")}
    sys.stdout.write(json.dumps(brief) + "\n")
    # A run stopped by SIGTERM exits non-zero so that a job controller restarts it rather than
    # marking it complete; the rerun resumes from the checkpoint it saved.
    return SIGTERM_EXIT_CODE if summary["interrupted"] else 0


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    from maskrcnn.cli import add_config_arguments

    parser = commands.command(
        "train",
        "train Mask R-CNN (resumes from DIR/checkpoints; run under horovodrun/mpirun for several processes)",
        _train,
    )
    parser.add_argument("--data", required=True, metavar="SHARDS_DIR", help="training shards (with manifest.json)")
    parser.add_argument("--model-dir", required=True, metavar="DIR", help="checkpoints, logs, export and summary go here")
    add_config_arguments(parser)
