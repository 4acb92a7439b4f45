"""Run a child program so that cancelling the step stops it too.

A cancelled KFP run sends SIGTERM to the step's container; kfp.local's user presses Ctrl-C. Either
way the child (``horovodrun`` with its workers, a server being smoke-tested) must not outlive the
step, so it runs in its own process group and the whole group gets the signal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Mapping, Sequence

log = logging.getLogger(__name__)


def run_to_completion(argv: Sequence[str], *, env: Mapping[str, str] | None = None, what: str) -> None:
    """Run ``argv`` with inherited stdout/stderr; raise RuntimeError naming ``what`` when it fails.

    SIGTERM and SIGINT received meanwhile are passed on to the child's process group, so the child
    stops and this step fails with it.
    """
    log.info("%s: %s", what, " ".join(argv))
    process = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, start_new_session=True)

    def forward(signum, _frame):
        log.warning("%s: got signal %d, stopping the child process group", what, signum)
        _signal_group(process, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL)
    if code != 0:
        raise RuntimeError(f"{what} failed with exit code {code}")


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
