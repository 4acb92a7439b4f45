"""The deploy step: the AP gate, then a serving endpoint, then a smoke request.

On a cluster it runs ``maskrcnn k8s deploy`` (gate, Deployment + Service, rollout, smoke request,
rollback). On this machine the same gate (``maskrcnn.k8s.gate``) decides, against the model the
local server currently serves, and a deployed model is served by a detached ``maskrcnn serve``
process (see ``local_server``) that gets the same smoke request.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from maskrcnn.errors import UserError
from maskrcnn.pipeline import local_server
from maskrcnn.pipeline.smoke import smoke_request
from maskrcnn.utils.io import read_json, write_json

log = logging.getLogger(__name__)


def first_image(coco_dir: Path, split: str = "val2017") -> Path:
    """The first image of the split's annotation file (the smoke request's image)."""
    images = read_json(coco_dir / "annotations" / f"instances_{split}.json")["images"]
    if not images:
        raise UserError(f"{coco_dir}: {split} has no images to send as a smoke request")
    return coco_dir / split / images[0]["file_name"]


def decision_markdown(decision: Mapping[str, Any]) -> str:
    """The deploy decision (``GateDecision.to_dict()`` plus endpoint and smoke result) as Markdown."""
    verdict = "Deployed" if decision.get("deploy") else "Not deployed"
    lines = [f"# Deploy decision: {verdict}", "", str(decision.get("reason", "")), "",
             "| check | value | required | passed |", "| --- | --- | --- | --- |"]
    for check in decision.get("checks", []):
        lines.append(f"| {check['name']} | {check['value']:.4f} | {check['required']:.4f} | {'yes' if check['passed'] else 'no'} |")
    if decision.get("endpoint"):
        lines += ["", f"Endpoint: `{decision['endpoint']}` (`POST /invocations`, `/predict`)."]
    if decision.get("smoke"):
        smoke = decision["smoke"]
        lines.append(f"Smoke request: HTTP {smoke['status']}, {smoke['annotations']} annotations, {smoke['latency_ms']} ms.")
    if decision.get("stop"):
        lines.append(f"Stop the local server: `{decision['stop']}`.")
    return "\n".join(lines) + "\n"


def local_deploy(
    *, model_path: str, metrics: Mapping[str, Any], coco_path: str, min_box_ap: float, min_mask_ap: float,
    state_dir: Path, port: int, stop_command: str,
) -> dict[str, Any]:
    """Gate against the model the local server serves, then serve ``model_path`` and smoke-test it."""
    from maskrcnn.k8s.gate import ModelScore, decide, scores_from_metrics

    model_dir = Path(model_path)
    candidate = scores_from_metrics(metrics, model_uri=model_dir.resolve().as_uri())
    serving = local_server.running(state_dir)
    deployed = ModelScore(**serving["score"]) if serving else None
    gate = decide(candidate, min_box_ap=min_box_ap, min_mask_ap=min_mask_ap, deployed=deployed)
    decision: dict[str, Any] = {**gate.to_dict(), "endpoint": serving["url"] if serving else ""}
    if not gate.deploy:
        log.info("deploy gate: %s", gate.reason)
        return decision
    state = local_server.start(model_dir=model_dir, port=port, state_dir=state_dir,
                               extra={"score": dataclasses.asdict(candidate)})
    try:
        decision["smoke"] = smoke_request(state["url"], first_image(Path(coco_path)), read_json(model_dir / "class_map.json"))
    except BaseException:
        local_server.stop(state_dir)
        raise
    decision.update(endpoint=state["url"], pid=state["pid"], log=state["log"], stop=stop_command)
    log.info("deployed %s at %s; the smoke request got %d annotations", model_dir, state["url"],
             decision["smoke"]["annotations"])
    return decision


@dataclass(frozen=True)
class DeployOutcome:
    decision: dict[str, Any]   # the gate's decision and what was done (``<run dir>/deploy/decision.json``)
    markdown: str              # the same for the KFP UI
    endpoint: str              # where the deployed (or still deployed) model answers; "" if none


def cluster_deploy(*, model_path: str, metrics_path: str, report_path: Path, k8s_args: Sequence[str]) -> DeployOutcome:
    """``maskrcnn k8s deploy`` in this process (gate, rollout, smoke request, rollback) and its report."""
    from maskrcnn.cli import main as maskrcnn_main
    from maskrcnn.k8s.serving import SERVING_PORT

    argv = ["k8s", "deploy", *k8s_args, "--metrics", metrics_path, "--model-uri", model_path, "--report", str(report_path)]
    log.info("deploying on the cluster: maskrcnn %s", " ".join(argv))
    code = maskrcnn_main(argv)
    if code != 0:
        raise RuntimeError(f"maskrcnn k8s deploy failed with exit code {code}; its report: {report_path}")
    report = read_json(report_path)
    args = dict(zip(k8s_args[::2], k8s_args[1::2]))
    endpoint = ""
    if report["status"] == "deployed":
        endpoint = f"http://{args.get('--name', 'maskrcnn')}.{args['--namespace']}.svc.cluster.local:{SERVING_PORT}"
    return DeployOutcome(decision=report, markdown=report_path.with_suffix(".md").read_text(), endpoint=endpoint)


def deploy_step(
    *, executor: str, model_path: str, metrics_path: str, coco_path: str, min_box_ap: float, min_mask_ap: float,
    data_root: str, port: int, k8s_args: Sequence[str] = (),
) -> DeployOutcome:
    """Gate and deploy; the decision is also written to ``<run dir>/deploy/decision.json``."""
    report_path = Path(model_path).parent / "deploy" / "decision.json"
    if executor != "local":
        return cluster_deploy(model_path=model_path, metrics_path=metrics_path, report_path=report_path,
                              k8s_args=k8s_args)
    decision = local_deploy(
        model_path=model_path, metrics=read_json(metrics_path), coco_path=coco_path, min_box_ap=min_box_ap,
        min_mask_ap=min_mask_ap, state_dir=Path(data_root) / "serving", port=port,
        stop_command=f"maskrcnn pipeline stop --workdir {Path(data_root).resolve()}",
    )
    write_json(report_path, decision)
    return DeployOutcome(decision=decision, markdown=decision_markdown(decision), endpoint=decision.get("endpoint", ""))


def k8s_deploy_args(
    *, namespace: str, image: str, data_volume: str, data_root: str, min_box_ap: float, min_mask_ap: float,
) -> list[str]:
    """The cluster arguments of ``maskrcnn k8s deploy`` (the model path is on the data volume).

    The smoke request goes straight to the Service (the step's pod carries the serving-client label
    the serving NetworkPolicy admits); the API server's service proxy would be refused by that policy.
    """
    from maskrcnn.k8s.serving import SERVING_PORT

    smoke_url = f"http://maskrcnn.{namespace}.svc.cluster.local:{SERVING_PORT}/invocations"
    return ["--namespace", namespace, "--image", image, "--pvc", data_volume, "--mount-path", data_root,
            "--min-box-ap", str(min_box_ap), "--min-mask-ap", str(min_mask_ap), "--smoke-url", smoke_url]
