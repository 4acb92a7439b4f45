"""Gate, deploy, smoke-test and, when anything fails, roll back the model server.

``deploy_model`` runs the whole step:

1. read the candidate's ``metrics.json`` and the serving Deployment's annotations (the model it
   serves now) and ask ``maskrcnn.k8s.gate.decide``; a refusal changes nothing (exit 0, reason in
   the report);
2. create or update Service, PodDisruptionBudget and Deployment (the previous pod template and
   annotations are recorded first);
3. wait for the rollout (``observedGeneration``, updated and available replicas, or
   ``ProgressDeadlineExceeded``);
4. send a smoke request with the serving contract (``{"img_id", "img_data"}``, a small generated
   JPEG) through the API server's service proxy (works from anywhere the kubeconfig works) or a
   given URL, and check the response's shape;
5. on a failed rollout or smoke request, re-apply the recorded pod template and annotations (or
   remove what a first deployment created) and wait for that rollout.

The KServe variant does the same with an ``InferenceService`` (Ready condition instead of replicas).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskrcnn.errors import UserError
from maskrcnn.k8s import gate
from maskrcnn.k8s.client import api_error
from maskrcnn.k8s.serving import (
    KSERVE_API_VERSION, PORT_NAME, ModelLocation, ServingSpec, build_deployment, build_inference_service,
    build_pdb, build_service, inference_service_problems, updated_template,
)
from maskrcnn.utils.io import atomic_write, write_json

logger = logging.getLogger(__name__)

SMOKE_IMAGE_SIZE = (48, 64)  # (height, width) of the generated smoke-test JPEG


@dataclass(frozen=True)
class DeploySettings:
    rollout_timeout_seconds: float = 900.0
    poll_seconds: float = 2.0
    smoke_url: str = ""            # "" = through the API server's service proxy
    smoke_timeout_seconds: float = 60.0
    kserve: bool = False


@dataclass
class DeployReport:
    """What happened, for the JSON and Markdown reports."""

    status: str = "pending"       # refused | deployed | rolled_back | failed
    reason: str = ""
    decision: dict = field(default_factory=dict)
    target: str = ""
    model_uri: str = ""
    steps: list[dict] = field(default_factory=list)

    def step(self, name: str, ok: bool, detail: str = "", **extra: Any) -> None:
        self.steps.append({"step": name, "ok": ok, "detail": detail, **extra})
        (logger.info if ok else logger.warning)("%s: %s %s", name, "ok" if ok else "FAILED", detail)

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "target": self.target, "model_uri": self.model_uri,
                "decision": self.decision, "steps": self.steps}

    def markdown(self) -> str:
        lines = [f"# Deploy: {self.status}", "", self.reason, "", f"- target: `{self.target}`",
                 f"- model: `{self.model_uri}`", ""]
        checks = self.decision.get("checks") or []
        if checks:
            lines += ["| gate check | value | required | passed |", "| --- | ---: | ---: | :---: |"]
            lines += [f"| {c['name']} | {c['value']:.4f} | {c['required']:.4f} | {'yes' if c['passed'] else 'no'} |"
                      for c in checks]
            lines.append("")
        if self.steps:
            lines += ["| step | result | detail |", "| --- | --- | --- |"]
            lines += [f"| {s['step']} | {'ok' if s['ok'] else 'failed'} | {s['detail']} |" for s in self.steps]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> None:
        """``path`` (JSON) and the Markdown beside it (same name, ``.md``)."""
        path = Path(path)
        write_json(path, self.to_dict())
        with atomic_write(path.with_suffix(".md"), "w") as f:
            f.write(self.markdown())


# --------------------------------------------------------------------------- smoke request
def smoke_image(height: int = SMOKE_IMAGE_SIZE[0], width: int = SMOKE_IMAGE_SIZE[1]) -> bytes:
    """A small JPEG (a gradient with a filled ellipse), made here so no file has to ship."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(230, 40, 40))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def smoke_request() -> dict:
    return {"img_id": "deploy-smoke-test", "img_data": base64.b64encode(smoke_image()).decode()}


def prediction_problems(response: Any, image_size: tuple[int, int] = SMOKE_IMAGE_SIZE) -> list[str]:
    """How a prediction response breaks the serving contract ([] = it keeps it).

    ``{"annotations": [{"bbox": [x, y, w, h], "score", "category_id", "category_name",
    "segmentation": {"counts", "size": [h, w]}}]}``; no detections is a valid answer.
    """
    if not isinstance(response, dict) or not isinstance(response.get("annotations"), list):
        return ["response is not an object with an 'annotations' list"]
    problems = []
    for i, ann in enumerate(response["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            problems.append(f"{where}: not an object")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0):
            problems.append(f"{where}.bbox: expected [x, y, width, height] numbers, got {bbox!r}")
        score = ann.get("score")
        if not (isinstance(score, (int, float)) and 0.0 <= score <= 1.0):
            problems.append(f"{where}.score: expected a number in [0, 1], got {score!r}")
        if not isinstance(ann.get("category_id"), int) or not isinstance(ann.get("category_name"), str):
            problems.append(f"{where}: category_id (int) and category_name (str) required")
        segmentation = ann.get("segmentation")
        if not (isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (list, str))):
            problems.append(f"{where}.segmentation: expected {{'counts', 'size'}}")
        elif list(segmentation.get("size") or []) != list(image_size):
            problems.append(f"{where}.segmentation.size: {segmentation.get('size')!r} is not the image's "
                            f"[height, width] {list(image_size)}")
    return problems


# --------------------------------------------------------------------------- targets
class _Target:
    """One kind of serving object: read, apply, wait, restore and where to send the smoke request."""

    kind = ""

    def __init__(self, api_client, spec: ServingSpec):
        self.api_client, self.spec = api_client, spec

    def describe(self) -> str:
        return f"{self.kind} {self.spec.namespace}/{self.spec.name}"


class _DeploymentTarget(_Target):
    kind = "Deployment"

    def __init__(self, api_client, spec: ServingSpec):
        from kubernetes import client

        super().__init__(api_client, spec)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)

    def read(self) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.apps.read_namespaced_deployment(self.spec.name, self.spec.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise api_error(e, f"read {self.describe()}") from None
        except Exception as e:
            raise api_error(e, f"read {self.describe()}") from None
        return self.api_client.sanitize_for_serialization(obj)

    def manifest(self, model: gate.ModelScore, location: ModelLocation) -> dict:
        return build_deployment(self.spec, model, location)

    def apply_companions(self, report: DeployReport) -> list[tuple[str, str]]:
        """Create (or update) the Service and the PodDisruptionBudget; return what was created."""
        created = []
        for kind, manifest, read, create, patch in (
            ("Service", build_service(self.spec), self.core.read_namespaced_service,
             self.core.create_namespaced_service, self.core.patch_namespaced_service),
            ("PodDisruptionBudget", build_pdb(self.spec), self.policy.read_namespaced_pod_disruption_budget,
             self.policy.create_namespaced_pod_disruption_budget, self.policy.patch_namespaced_pod_disruption_budget),
        ):
            if _exists(read, self.spec.name, self.spec.namespace, f"read {kind}"):
                _call(patch, f"update {kind} {self.spec.name}", self.spec.name, self.spec.namespace,
                      {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": manifest["spec"]})
                report.step(f"update {kind}", True, self.spec.name)
            else:
                _call(create, f"create {kind} {self.spec.name}", self.spec.namespace, manifest)
                created.append((kind, self.spec.name))
                report.step(f"create {kind}", True, self.spec.name)
        return created

    def apply(self, manifest: dict, current: dict | None) -> None:
        if current is None:
            _call(self.apps.create_namespaced_deployment, f"create {self.describe()}", self.spec.namespace, manifest)
            return
        updated = dict(current)
        updated["metadata"] = {**current["metadata"],
                               "annotations": {**(current["metadata"].get("annotations") or {}),
                                               **manifest["metadata"]["annotations"]},
                               "labels": {**(current["metadata"].get("labels") or {}), **manifest["metadata"]["labels"]}}
        # The selector is immutable and replicas belong to whoever scales the Deployment (an HPA) once
        # it exists; the pod template keeps what an overlay set (see updated_template).
        updated["spec"] = {**current["spec"], **{k: v for k, v in manifest["spec"].items()
                                                 if k not in ("selector", "replicas", "template")},
                           "template": updated_template(current["spec"]["template"], manifest["spec"]["template"])}
        updated.pop("status", None)
        _call(self.apps.replace_namespaced_deployment, f"update {self.describe()}", self.spec.name,
              self.spec.namespace, updated)

    def restore(self, previous: dict) -> None:
        """Re-apply the recorded pod template and model annotations of ``previous``."""
        current = self.read()
        if current is None:
            _call(self.apps.create_namespaced_deployment, f"re-create {self.describe()}", self.spec.namespace,
                  {k: previous[k] for k in ("apiVersion", "kind", "spec")} | {"metadata": {
                      k: previous["metadata"][k] for k in ("name", "namespace", "labels", "annotations")
                      if k in previous["metadata"]}})
            return
        annotations = dict(current["metadata"].get("annotations") or {})
        for key in (gate.ANNOTATION_BOX_AP, gate.ANNOTATION_MASK_AP, gate.ANNOTATION_MODEL_URI, gate.ANNOTATION_MODEL_ID):
            if key in (previous["metadata"].get("annotations") or {}):
                annotations[key] = previous["metadata"]["annotations"][key]
            else:
                annotations.pop(key, None)
        current["metadata"]["annotations"] = annotations
        current["spec"]["template"] = previous["spec"]["template"]
        current.pop("status", None)
        _call(self.apps.replace_namespaced_deployment, f"roll back {self.describe()}", self.spec.name,
              self.spec.namespace, current)

    def remove(self, companions: list[tuple[str, str]]) -> None:
        """Undo a first deployment: the Deployment and the companions this run created."""
        deleters = {"Service": self.core.delete_namespaced_service,
                    "PodDisruptionBudget": self.policy.delete_namespaced_pod_disruption_budget}
        _call(self.apps.delete_namespaced_deployment, f"delete {self.describe()}", self.spec.name, self.spec.namespace)
        for kind, name in companions:
            _call(deleters[kind], f"delete {kind} {name}", name, self.spec.namespace)

    def rollout(self, obj: dict) -> tuple[str, str]:
        """("done" | "progressing" | "failed", detail) of the Deployment's current generation."""
        status, generation = obj.get("status") or {}, obj["metadata"].get("generation", 0)
        replicas = obj["spec"].get("replicas", 1)
        if status.get("observedGeneration", 0) < generation:  # the status still describes the last rollout
            return "progressing", "waiting for the controller to observe the new generation"
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
                return "failed", f"ProgressDeadlineExceeded: {condition.get('message', '')}"
        # The conditions `kubectl rollout status` waits for.
        updated, available, total = (status.get(k) or 0 for k in ("updatedReplicas", "availableReplicas", "replicas"))
        if updated < replicas:
            return "progressing", f"{updated} of {replicas} replicas updated"
        if total > updated:
            return "progressing", f"{total - updated} old replicas pending termination"
        if available < updated:
            return "progressing", f"{available} of {updated} updated replicas available"
        return "done", f"{available}/{replicas} replicas available"

    def smoke_path(self) -> str:
        return f"/api/v1/namespaces/{self.spec.namespace}/services/{self.spec.name}:{PORT_NAME}/proxy/invocations"


class _InferenceServiceTarget(_Target):
    kind = "InferenceService"
    group, version, plural = "serving.kserve.io", KSERVE_API_VERSION.split("/")[1], "inferenceservices"

    def __init__(self, api_client, spec: ServingSpec):
        from kubernetes import client

        super().__init__(api_client, spec)
        self.custom = client.CustomObjectsApi(api_client)

    def read(self) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(self.group, self.version, self.spec.namespace,
                                                            self.plural, self.spec.name)
        except ApiException as e:
            if e.status == 404 and "could not find the requested resource" not in str(e.body):
                return None
            raise api_error(e, f"read {self.describe()} (is KServe installed?)") from None
        except Exception as e:
            raise api_error(e, f"read {self.describe()}") from None

    def manifest(self, model: gate.ModelScore, location: ModelLocation) -> dict:
        manifest = build_inference_service(self.spec, model, location)
        problems = inference_service_problems(manifest)
        if problems:
            raise UserError("InferenceService manifest is invalid: " + "; ".join(problems))
        return manifest

    def apply_companions(self, report: DeployReport) -> list[tuple[str, str]]:
        return []  # KServe creates its own Services

    def apply(self, manifest: dict, current: dict | None) -> None:
        if current is None:
            _call(self.custom.create_namespaced_custom_object, f"create {self.describe()}", self.group, self.version,
                  self.spec.namespace, self.plural, manifest)
            return
        updated = {**current, "spec": manifest["spec"],
                   "metadata": {**current["metadata"], "annotations": {**(current["metadata"].get("annotations") or {}),
                                                                       **manifest["metadata"]["annotations"]}}}
        updated.pop("status", None)
        _call(self.custom.replace_namespaced_custom_object, f"update {self.describe()}", self.group, self.version,
              self.spec.namespace, self.plural, self.spec.name, updated)

    def restore(self, previous: dict) -> None:
        """Re-apply the previous spec and annotations (re-create the object if it is gone)."""
        current = self.read()
        annotations = previous["metadata"].get("annotations") or {}
        if current is None:
            _call(self.custom.create_namespaced_custom_object, f"re-create {self.describe()}", self.group,
                  self.version, self.spec.namespace, self.plural,
                  {"apiVersion": previous["apiVersion"], "kind": previous["kind"], "spec": previous["spec"],
                   "metadata": {"name": self.spec.name, "namespace": self.spec.namespace, "annotations": annotations,
                                "labels": previous["metadata"].get("labels") or {}}})
            return
        restored = {**current, "spec": previous["spec"], "metadata": {**current["metadata"], "annotations": annotations}}
        restored.pop("status", None)
        _call(self.custom.replace_namespaced_custom_object, f"roll back {self.describe()}", self.group, self.version,
              self.spec.namespace, self.plural, self.spec.name, restored)

    def remove(self, companions: list[tuple[str, str]]) -> None:
        _call(self.custom.delete_namespaced_custom_object, f"delete {self.describe()}", self.group, self.version,
              self.spec.namespace, self.plural, self.spec.name)

    def rollout(self, obj: dict) -> tuple[str, str]:
        status = obj.get("status") or {}
        if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 0):
            return "progressing", "waiting for KServe to observe the new generation"
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if ready and ready.get("status") == "True":
            return "done", "Ready"
        if ready and ready.get("status") == "False" and ready.get("reason") in ("RevisionFailed", "ProgressDeadlineExceeded"):
            return "failed", f"{ready.get('reason')}: {ready.get('message', '')}"
        return "progressing", (ready or {}).get("message", "not ready")

    def smoke_path(self) -> str:
        return (f"/api/v1/namespaces/{self.spec.namespace}/services/{self.spec.name}-predictor:80/proxy"
                "/invocations")


def _exists(read, name: str, namespace: str, what: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read(name, namespace)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise api_error(e, what) from None
    except Exception as e:
        raise api_error(e, what) from None


def _call(method, what: str, *args):
    from kubernetes.client.exceptions import ApiException

    try:
        return method(*args)
    except ApiException as e:
        raise api_error(e, what) from None
    except Exception as e:
        if isinstance(e, UserError):
            raise
        raise api_error(e, what) from None


# --------------------------------------------------------------------------- the step
def deploy_model(api_client, spec: ServingSpec, *, metrics_path: str | Path, model_uri: str, location: ModelLocation,
                 min_box_ap: float, min_mask_ap: float, settings: DeploySettings = DeploySettings()) -> DeployReport:
    """Gate, then deploy with rollout wait, smoke request and rollback. See the module docstring."""
    target = (_InferenceServiceTarget if settings.kserve else _DeploymentTarget)(api_client, spec)
    report = DeployReport(target=target.describe(), model_uri=model_uri)
    candidate = gate.read_candidate(metrics_path, model_uri)
    current = target.read()
    decision = gate.decide(candidate, min_box_ap=min_box_ap, min_mask_ap=min_mask_ap,
                           deployed=gate.deployed_from_annotations((current or {}).get("metadata", {}).get("annotations")))
    report.decision, report.reason = decision.to_dict(), decision.reason
    if not decision.deploy:
        report.status = "refused"
        logger.info("%s", decision.reason)
        return report

    manifest = target.manifest(candidate, location)
    companions = target.apply_companions(report)
    target.apply(manifest, current)
    report.step(f"{'update' if current else 'create'} {target.kind}", True, spec.name,
                revision_before=((current or {}).get("metadata", {}).get("annotations") or {}).get(
                    "deployment.kubernetes.io/revision", ""))
    ok, detail = _wait_rollout(target, settings)
    report.step("rollout", ok, detail)
    if ok:
        problems = _smoke(target, settings)
        ok = not problems
        report.step("smoke request", ok, "; ".join(problems) or "response keeps the serving contract")
        detail = "smoke request failed: " + "; ".join(problems) if problems else detail
    if ok:
        report.status = "deployed"
        report.reason = decision.reason + f"; serving {model_uri}"
        return report

    if current is not None:
        target.restore(current)
        back_ok, back_detail = _wait_rollout(target, settings)
        report.step("roll back", back_ok, f"previous pod template re-applied; {back_detail}")
        report.status = "rolled_back" if back_ok else "failed"
    else:
        target.remove(companions)
        report.step("roll back", True, "first deployment removed (nothing was served before)")
        report.status = "rolled_back"
    report.reason = f"deploy of {model_uri} failed ({detail}); " + (
        "the previous model is served again" if current is not None else "nothing is deployed")
    return report


def _wait_rollout(target: _Target, settings: DeploySettings) -> tuple[bool, str]:
    deadline = time.monotonic() + settings.rollout_timeout_seconds
    detail = ""
    while time.monotonic() < deadline:
        obj = target.read()
        if obj is None:
            return False, f"{target.describe()} disappeared"
        state, detail = target.rollout(obj)
        if state != "progressing":
            return state == "done", detail
        time.sleep(settings.poll_seconds)
    return False, f"rollout not done within {settings.rollout_timeout_seconds:g} s ({detail})"


def _smoke(target: _Target, settings: DeploySettings) -> list[str]:
    """Problems of the smoke request's answer ([] = fine)."""
    body = smoke_request()
    try:
        if settings.smoke_url:
            import requests

            response = requests.post(settings.smoke_url, json=body, timeout=settings.smoke_timeout_seconds)
            status, text = response.status_code, response.text
        else:
            status, text = _proxy_post(target.api_client, target.smoke_path(), body, settings.smoke_timeout_seconds)
    except Exception as e:
        return [f"request failed: {type(e).__name__}: {e}"]
    if status != 200:
        return [f"HTTP {status}: {text[:300]}"]
    try:
        return prediction_problems(json.loads(text))
    except ValueError:
        return [f"response is not JSON: {text[:200]!r}"]


def _proxy_post(api_client, path: str, body: dict, timeout: float) -> tuple[int, str]:
    """POST ``body`` through the API server's service proxy, authenticated like every other call."""
    from kubernetes.client.exceptions import ApiException

    try:
        response = api_client.call_api(
            path, "POST", header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout)
        raw = response[0] if isinstance(response, tuple) else response
        return raw.status, raw.data.decode()
    except ApiException as e:
        return e.status, str(e.body or e.reason)
