"""The local deployment: one ``maskrcnn serve`` process that outlives the pipeline run.

Lifetime: the server is started detached (its own session, output to a log file) so that it keeps
answering after ``maskrcnn pipeline run --local`` returns; its pid, URL and model are recorded in
``{state_dir}/server.json``. Stop it with ``kill $(jq .pid server.json)`` or by the command the run
prints. A later run that deploys replaces it (stops the recorded process, then starts the new one).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from maskrcnn.utils.io import read_json, write_json

log = logging.getLogger(__name__)

STATE_FILE = "server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    # Guard against a recycled pid: only a `maskrcnn ... serve` process counts as ours.
    return not cmdline.exists() or b"serve" in cmdline.read_bytes()


def running(state_dir: Path) -> dict[str, Any] | None:
    """The recorded server if its process is still alive, else None."""
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    state = read_json(path)
    return state if _alive(int(state["pid"])) else None


def stop(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the recorded server (SIGTERM, then SIGKILL after ``timeout``); True if one was running."""
    state = running(state_dir)
    if state is None:
        return False
    pid = int(state["pid"])
    log.info("stopping the previous local server (pid %d, %s)", pid, state["url"])
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """Poll ``GET {url}/readyz`` until 200; raise RuntimeError with the log tail if the server dies or times out."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} while loading:\n{_log_tail(log_path)}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{_log_tail(log_path)}")


def start(*, model_dir: Path, port: int, state_dir: Path, extra: dict[str, Any], ready_timeout: float = 300.0) -> dict[str, Any]:
    """Replace the recorded server by one serving ``model_dir``; return its state (``pid``, ``url``, ...).

    ``port`` is used when free, else a free port is chosen (and logged). ``extra`` is recorded in the
    state file beside the pid (e.g. the model's AP, which the next run's gate compares against).
    """
    stop(state_dir)
    if not port_is_free(port):
        chosen = free_port()
        log.warning("port %d is in use; serving on port %d instead", port, chosen)
        port = chosen
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "server.log"
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "maskrcnn.cli", "serve", "--model-dir", str(model_dir), "--host", "127.0.0.1",
            "--port", str(port)]
    log.info("starting the local server: %s (log %s)", " ".join(argv), log_path)
    with open(log_path, "ab") as log_file:
        # Detached: its own session, no inherited pipes, so it outlives this step and the run.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True)
    try:
        wait_ready(url, process, log_path, ready_timeout)
    except BaseException:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        raise
    state = {"pid": process.pid, "url": url, "port": port, "model_dir": str(model_dir), "log": str(log_path),
             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    write_json(state_dir / STATE_FILE, state)
    return state
