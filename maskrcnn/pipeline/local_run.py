"""``maskrcnn pipeline run --local``: the whole pipeline on this machine, with kfp.local.

It generates a small shapes dataset in the COCO layout, packs it as a local mirror of COCO's
archives (so the real download code runs), and executes the very pipeline that the cluster runs
with kfp.local's SubprocessRunner and ``executor="local"``: download, convert, train (``horovodrun
-np 2`` when Horovod is installed), evaluate, deploy (a detached local server, smoke-tested).

Working directory ``W``: ``mirror/<dataset>/`` (archives), ``datasets/<source key>/{coco,shards}``
(the cache a second run reuses), ``runs/<run id>/{model,eval,deploy}``, ``serving/`` (the local
server's pid file and log), ``kfp/`` (kfp.local's artifacts), ``logs/`` (the full run log) and
``last_run.json`` (what the run printed, for scripts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

from maskrcnn.errors import UserError
from maskrcnn.utils.io import read_json, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalRun:
    """What the local run does; defaults finish in a few minutes on 2 CPU cores."""

    workdir: Path
    train_images: int = 400
    val_images: int = 24
    seed: int = 0
    preset: str = "tiny"
    max_steps: int = 400
    processes: int = 2
    port: int = 8080
    min_box_ap: float = 0.0
    min_mask_ap: float = 0.0
    overrides: tuple[str, ...] = field(default_factory=tuple)


def prepare_mirror(run: LocalRun) -> Path:
    """Generate the dataset and its mirror once per (sizes, seed); the mirror's path is the data source."""
    from maskrcnn.data.mirror import CHECKSUMS_FILE, make_mirror
    from maskrcnn.data.synth import generate

    name = f"shapes-train{run.train_images}-val{run.val_images}-seed{run.seed}"
    mirror = run.workdir / "mirror" / name
    if (mirror / CHECKSUMS_FILE).is_file():
        log.info("local mirror %s exists; reusing it", mirror)
        return mirror
    generated = run.workdir / "synth" / name
    generate(generated, train=run.train_images, val=run.val_images, seed=run.seed)
    make_mirror(generated, mirror)
    return mirror


class _QuietExecutorInput(io.TextIOBase):
    """A stdout filter that drops the executor-input JSON kfp's executor logs for every step.

    Everything still goes, unfiltered, to the run's log file.
    """

    def __init__(self, terminal: TextIO, log_file: TextIO):
        self._terminal, self._log = terminal, log_file
        self._pending = ""
        self._skip_until: str | None = None

    def write(self, text: str) -> int:
        self._log.write(text)
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._line(line + "\n")
        return len(text)

    def _line(self, line: str) -> None:
        if self._skip_until is not None:
            if line.rstrip() == self._skip_until:
                self._skip_until = None
            return
        if "Got executor_input:" in line:
            # The JSON follows, indented like this line; it ends with "}" at the same indentation.
            self._skip_until = line[: len(line) - len(line.lstrip())] + "}"
            self._terminal.write(line.replace("Got executor_input:", "Got executor_input (in the run log)"))
            return
        self._terminal.write(line)

    def flush(self) -> None:
        self._terminal.flush()
        self._log.flush()


@contextlib.contextmanager
def _tee_stdout(log_path: Path) -> Iterator[None]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        original = sys.stdout
        sys.stdout = _QuietExecutorInput(original, log_file)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stdout = original


def pipeline_arguments(run: LocalRun, source: Path) -> dict[str, Any]:
    """The pipeline's parameters for a local run (the cluster-only ones keep their defaults)."""
    return {
        "source": str(source),
        "executor": "local",
        "data_root": str(run.workdir),
        "data_volume": "",
        "preset": run.preset,
        "config_overrides": list(run.overrides),
        "batch_per_gpu": 0,
        "epochs": 0.0,
        "max_steps": run.max_steps,
        "local_processes": run.processes,
        "train_shards": 2,
        "val_shards": 1,
        "convert_workers": 2,
        "min_box_ap": run.min_box_ap,
        "min_mask_ap": run.min_mask_ap,
        "serve_port": run.port,
    }


def run_locally(run: LocalRun) -> dict[str, Any]:
    """Run the pipeline; returns (and writes to ``W/last_run.json``) where everything is and the metrics."""
    import kfp.local

    from pipelines.maskrcnn_pipeline import maskrcnn_pipeline

    started = time.monotonic()
    run = dataclasses.replace(run, workdir=run.workdir.resolve())
    source = prepare_mirror(run)
    log_path = run.workdir / "logs" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.log"
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(run.workdir / "kfp"))
    with warnings.catch_warnings(), _tee_stdout(log_path):
        # The base images are the project's images, not python:*; locally the venv stands in for them.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            task = maskrcnn_pipeline(**pipeline_arguments(run, source))
        except RuntimeError as e:
            raise UserError(f"{e} Its output is above and in {log_path}") from None
    outputs = task.outputs
    summary = _summary(outputs, wall_seconds=time.monotonic() - started, log_path=log_path)
    write_json(run.workdir / "last_run.json", summary)
    return summary


def _summary(outputs: dict[str, Any], *, wall_seconds: float, log_path: Path) -> dict[str, Any]:
    model = outputs["model"].metadata
    metrics = read_json(outputs["metrics"].path)
    decision_path = Path(model["path"]).parent / "deploy" / "decision.json"
    decision = read_json(decision_path) if decision_path.is_file() else {}
    return {
        "wall_seconds": round(wall_seconds, 1),
        "coco": outputs["coco"].metadata["path"],
        "download_cached": bool(outputs["coco"].metadata.get("cached")),
        "shards": outputs["shards"].metadata["path"],
        "convert_cached": bool(outputs["shards"].metadata.get("cached")),
        "model": model["path"],
        "train_steps": int(model.get("steps", 0)),
        "eval": str(Path(model["path"]).parent / "eval"),
        "metrics_json": str(Path(model["path"]).parent / "eval" / "metrics.json"),
        "box_AP": metrics["bbox"]["AP"],
        "mask_AP": metrics["segm"]["AP"],
        "report_html": outputs["report"].path,
        "decision": outputs["decision"].path,
        "deployed": bool(decision.get("deploy")),
        "reason": decision.get("reason", ""),
        "endpoint": outputs["endpoint"],
        "server_pid": decision.get("pid"),
        "server_log": decision.get("log"),
        "stop": decision.get("stop"),
        "kfp_artifacts": str(Path(outputs["model"].path).parents[1]),
        "log": str(log_path),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The lines the CLI prints at the end of a local run."""
    cached = [step for step in ("download", "convert") if summary[f"{step}_cached"]]
    lines = [
        f"maskrcnn-coco finished in {summary['wall_seconds']:.0f} s"
        + (f" ({' and '.join(cached)} reused the cache)" if cached else ""),
        f"  COCO dir         {summary['coco']}",
        f"  shards           {summary['shards']}",
        f"  model            {summary['model']}  ({summary['train_steps']:.0f} steps)",
        f"  evaluation       {summary['eval']}  (metrics.json, report.html)",
        f"  report (HTML)    {summary['report_html']}",
        f"  deploy decision  {summary['decision']}",
        f"  KFP artifacts    {summary['kfp_artifacts']}",
        f"  run log          {summary['log']}",
        f"  box AP {summary['box_AP']:.4f}   mask AP {summary['mask_AP']:.4f}",
    ]
    if summary["deployed"]:
        lines += [
            f"  serving at       {summary['endpoint']}  (POST /invocations, /predict; GET /ping)",
            f"  server           pid {summary['server_pid']}, log {summary['server_log']}; it keeps running",
            f"  stop it with     {summary['stop']}",
        ]
    else:
        lines.append(f"  not deployed: {summary['reason']}"
                     + (f"; still serving the previous model at {summary['endpoint']}" if summary["endpoint"] else ""))
    return "\n".join(lines)
