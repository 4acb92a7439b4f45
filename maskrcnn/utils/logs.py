"""Logging set-up for the command line (libraries only call ``logging.getLogger(__name__)``)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # TensorFlow's C++ start-up chatter hides the project's own progress lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
