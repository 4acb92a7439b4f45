"""An in-process fake of the Kubernetes API server, over real HTTP, for the runner and deployer tests.

It serves the endpoints ``maskrcnn.k8s`` uses on 127.0.0.1 (``ThreadingHTTPServer``), so the real
kubernetes client does the requests, (de)serialisation, watches and log streaming:

- generic create/get/list (label and field selectors)/watch/replace/merge-patch/delete for any
  namespaced resource (``/api/v1/...`` and ``/apis/<group>/<version>/...``), with resource
  versions, uids, 404/409 Status bodies;
- MPIJob create enforces the real CRD (``maskrcnn.k8s.crd.schema_violations``): 400 on unknown
  fields with ``fieldValidation=Strict`` (the API server's strict decoding), otherwise pruned with a
  warning; 422 Invalid with the causes for every other schema violation;
- a scripted mpi-operator: each created MPIJob runs the next scenario of ``mpijob_scenarios``
  (pods, conditions, launcher log lines, evictions), and deleting an MPIJob deletes its pods;
- pod logs, optionally followed until the pod ends;
- a scripted Deployment controller (rollout succeeds, or ends in ``ProgressDeadlineExceeded`` when
  ``rollout_fails(deployment)``), and the service proxy, answered by ``smoke_answer``.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import random
import string
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlparse

from maskrcnn.k8s import crd

MPIJOBS = "kubeflow.org/v2beta1/mpijobs"
PODS = "/v1/pods"
DEPLOYMENTS = "apps/v1/deployments"
INFERENCE_SERVICES = "serving.kserve.io/v1beta1/inferenceservices"
PDBS = "policy/v1/poddisruptionbudgets"
SERVICES = "/v1/services"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
TERMINAL_PHASES = ("Succeeded", "Failed")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, causes: list | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if causes:
        body["details"] = {"causes": causes}
    return body


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, causes: list | None = None):
        super().__init__(message)
        self.code, self.body = code, status_body(code, reason, message, causes)


class FakeKubernetes:
    """The store, the scripted controllers and the HTTP server. Use as a context manager."""

    def __init__(self, *, mpijob_scenarios: list[str] | None = None, default_scenario: str = "succeed",
                 tick: float = 0.05, rollout_fails: Callable[[dict], bool] = lambda d: False,
                 smoke_fails: Callable[[dict], bool] = lambda d: False):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[tuple[int, str, str, str, dict]] = []  # (rv, resource, namespace, type, object)
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.requests: list[tuple[str, str]] = []                 # (method, path) of every request
        self.deleted: list[tuple[str, str, str]] = []             # (resource, namespace, name)
        self.mpijob_scenarios = list(mpijob_scenarios or [])
        self.default_scenario = default_scenario
        self.tick = tick
        self.rollout_fails = rollout_fails
        self.smoke_fails = smoke_fails
        self.smoke_requests: list[dict] = []
        self.log_stream_breaks = 0   # followed log streams to cut after their first chunk (connection resets)
        self.log_follows: dict[tuple[str, str], int] = {}  # follow requests per (namespace, pod)
        self._rv = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> "FakeKubernetes":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self):
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path

    # ----------------------------------------------------------------- store
    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, resource: str, namespace: str, labels: dict | None = None) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(o) for (r, ns, _), o in sorted(self.objects.items())
                    if r == resource and ns == namespace and _matches(o, labels or {}, {})]

    def put(self, resource: str, namespace: str, obj: dict, event: str = "MODIFIED") -> dict:
        with self._lock:
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self.objects[(resource, namespace, obj["metadata"]["name"])] = obj
            self.events.append((self._rv, resource, namespace, event, copy.deepcopy(obj)))
            self._changed.notify_all()
            return copy.deepcopy(obj)

    def update(self, resource: str, namespace: str, name: str, change: Callable[[dict], None]) -> dict | None:
        """Apply ``change`` to the stored object (no-op when it is gone); the controllers' writes."""
        with self._lock:
            obj = self.get(resource, namespace, name)
            if obj is None:
                return None
            change(obj)
            return self.put(resource, namespace, obj)

    def remove(self, resource: str, namespace: str, name: str) -> dict:
        with self._lock:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                raise ApiError(404, "NotFound", f'{resource.split("/")[-1]} "{name}" not found')
            self._rv += 1
            self.events.append((self._rv, resource, namespace, "DELETED", copy.deepcopy(obj)))
            self.deleted.append((resource, namespace, name))
            # Garbage collection: dependents of the deleted object go with it.
            uid = obj["metadata"].get("uid")
            for key, dependent in list(self.objects.items()):
                if any(ref.get("uid") == uid for ref in dependent["metadata"].get("ownerReferences", [])):
                    self.remove(key[0], key[1], key[2])
            self._changed.notify_all()
            return obj

    def append_log(self, namespace: str, pod: str, *lines: str) -> None:
        with self._lock:
            self.logs.setdefault((namespace, pod), []).extend(lines)
            self._changed.notify_all()

    # ----------------------------------------------------------------- API verbs
    def create(self, resource: str, namespace: str, body: dict, query: dict) -> tuple[dict, list[str]]:
        warnings: list[str] = []
        if resource == MPIJOBS:
            body, warnings = _admit_mpijob(body, strict=query.get("fieldValidation") == "Strict")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        with self._lock:
            if (resource, namespace, name) in self.objects:
                raise ApiError(409, "AlreadyExists", f'{resource.split("/")[-1]} "{name}" already exists')
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            created = self.put(resource, namespace, body, event="ADDED")
        self._after_write(resource, namespace, created, None)
        return created, warnings

    def replace(self, resource: str, namespace: str, name: str, body: dict) -> dict:
        with self._lock:
            current = self.objects.get((resource, namespace, name))
            if current is None:
                raise ApiError(404, "NotFound", f'{resource.split("/")[-1]} "{name}" not found')
            sent_rv = body.get("metadata", {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource.split("/")[-1]} "{name}": '
                                                "the object has been modified; please apply your changes to the "
                                                "latest version and try again")
            body = copy.deepcopy(body)
            for key in ("uid", "creationTimestamp", "generation", "namespace"):
                body["metadata"][key] = current["metadata"].get(key)
            body.setdefault("status", current.get("status", {}))
            if body.get("spec") != current.get("spec"):
                body["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            previous = copy.deepcopy(current)
            replaced = self.put(resource, namespace, body)
        self._after_write(resource, namespace, replaced, previous)
        return replaced

    def patch(self, resource: str, namespace: str, name: str, patch: dict) -> dict:
        current = self.get(resource, namespace, name)
        if current is None:
            raise ApiError(404, "NotFound", f'{resource.split("/")[-1]} "{name}" not found')
        merged = _merge_patch(current, patch)
        merged["metadata"].pop("resourceVersion", None)
        return self.replace(resource, namespace, name, merged)

    # ----------------------------------------------------------------- controllers
    def _after_write(self, resource: str, namespace: str, obj: dict, previous: dict | None) -> None:
        if resource == MPIJOBS and previous is None:
            with self._lock:
                scenario = self.mpijob_scenarios.pop(0) if self.mpijob_scenarios else self.default_scenario
            threading.Thread(target=_MPIOperator(self, namespace, obj, scenario).run, daemon=True).start()
        if resource == DEPLOYMENTS and (previous is None or previous["spec"] != obj["spec"]):
            threading.Thread(target=self._roll_out, args=(namespace, obj, previous), daemon=True).start()
        if resource == PDBS:  # the disruption controller's status (the client requires its fields)
            self.update(PDBS, namespace, obj["metadata"]["name"], lambda o: o.__setitem__("status", {
                "currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0,
                "observedGeneration": o["metadata"]["generation"]}))
        if resource == INFERENCE_SERVICES and (previous is None or previous["spec"] != obj["spec"]):
            threading.Thread(target=self._serve_inference, args=(namespace, obj), daemon=True).start()

    def _serve_inference(self, namespace: str, isvc: dict) -> None:
        """KServe, scripted: the predictor becomes Ready (or fails like a crashing revision)."""
        time.sleep(self.tick)
        generation, fails = isvc["metadata"]["generation"], self.rollout_fails(isvc)

        def change(obj: dict) -> None:
            if obj["metadata"]["generation"] == generation:
                ready = ({"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "crash loop"}
                         if fails else {"type": "Ready", "status": "True"})
                obj["status"] = {"observedGeneration": generation, "conditions": [ready]}
        self.update(INFERENCE_SERVICES, namespace, isvc["metadata"]["name"], change)

    def _roll_out(self, namespace: str, deployment: dict, previous: dict | None) -> None:
        time.sleep(self.tick)
        name, generation = deployment["metadata"]["name"], deployment["metadata"]["generation"]
        replicas = deployment["spec"].get("replicas", 1)
        template_changed = previous is None or previous["spec"].get("template") != deployment["spec"].get("template")
        fails = self.rollout_fails(deployment)

        def change(obj: dict) -> None:
            if obj["metadata"]["generation"] != generation:
                return  # superseded by a newer write
            annotations = obj["metadata"].setdefault("annotations", {})
            if template_changed:
                annotations["deployment.kubernetes.io/revision"] = str(
                    int(annotations.get("deployment.kubernetes.io/revision", "0")) + 1)
            old_available = (previous or {}).get("status", {}).get("availableReplicas", 0)
            if fails:
                obj["status"] = {
                    "observedGeneration": generation, "replicas": replicas + 1, "updatedReplicas": 1,
                    "readyReplicas": old_available, "availableReplicas": old_available, "unavailableReplicas": 1,
                    "conditions": [
                        {"type": "Available", "status": "True" if old_available else "False",
                         "reason": "MinimumReplicasAvailable"},
                        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                         "message": f'ReplicaSet "{name}-new" has timed out progressing.'},
                    ]}
            else:
                obj["status"] = {
                    "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                    ]}
        self.update(DEPLOYMENTS, namespace, name, change)

    def proxy(self, namespace: str, service: str, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """The service proxy: the smoke request reaches the Deployment the Service selects."""
        service_name = service.split(":")[0]
        isvc = self.get(INFERENCE_SERVICES, namespace, service_name[:-len("-predictor")]) \
            if service_name.endswith("-predictor") else None
        svc = self.get(SERVICES, namespace, service_name)
        if svc is None and isvc is None:
            raise ApiError(404, "NotFound", f'services "{service}" not found')
        if isvc is not None:
            backends = [isvc] if any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in isvc.get("status", {}).get("conditions", [])) else []
        else:
            selector = svc["spec"].get("selector", {})
            backends = [d for d in self.list(DEPLOYMENTS, namespace)
                        if _subset(selector, d["spec"]["template"]["metadata"].get("labels", {}))
                        and d.get("status", {}).get("availableReplicas")]
        if not backends:
            return 503, status_body(503, "ServiceUnavailable", f'no endpoints available for service "{service}"')
        request = json.loads(body or b"{}")
        self.smoke_requests.append({"path": path, "method": method, "request": request})
        if self.smoke_fails(backends[0]):
            return 500, {"detail": "prediction failed: the model could not be loaded"}
        try:
            from PIL import Image

            image = Image.open(io.BytesIO(base64.b64decode(request["img_data"], validate=True)))
            assert method == "POST" and image.format == "JPEG" and "img_id" in request
        except Exception:
            return 400, {"error": "expected POST {'img_id', 'img_data': base64 of a JPEG}"}
        height, width = image.height, image.width
        return 200, {"annotations": [{"bbox": [1.0, 2.0, 10.0, 12.0], "score": 0.9, "category_id": 1,
                                      "category_name": "circle",
                                      "segmentation": {"counts": [height * width], "size": [height, width]}}]}


class _MPIOperator:
    """Plays mpi-operator for one MPIJob: pods, conditions and launcher log lines per scenario.

    Scenarios: ``succeed``, ``succeed-slowly`` (until the log was followed 3 times), ``fail`` (program error, log tail), ``hang`` (runs forever),
    ``evict`` (a worker evicted: pod reason Evicted, job Failed/MPIJobEvicted), ``node-lost``
    (a worker pod disappears while the launcher keeps running), ``pending`` (no pods at all).
    """

    def __init__(self, fake: FakeKubernetes, namespace: str, job: dict, scenario: str):
        self.fake, self.ns, self.scenario = fake, namespace, scenario
        self.name, self.uid = job["metadata"]["name"], job["metadata"]["uid"]
        self.workers = job["spec"]["mpiReplicaSpecs"].get("Worker", {}).get("replicas", 0)
        self.launcher = f"{self.name}-launcher-" + "".join(random.choices(string.ascii_lowercase, k=5))

    def alive(self) -> bool:
        job = self.fake.get(MPIJOBS, self.ns, self.name)
        return job is not None and job["metadata"]["uid"] == self.uid and not self.fake._stopping

    def sleep(self, ticks: float = 1) -> bool:
        time.sleep(self.fake.tick * ticks)
        return self.alive()

    def condition(self, kind: str, reason: str, message: str) -> None:
        def change(job: dict) -> None:
            status = job.setdefault("status", {})
            conditions = [c for c in status.get("conditions", []) if c["type"] != kind]
            conditions.append({"type": kind, "status": "True", "reason": reason, "message": message,
                               "lastTransitionTime": now(), "lastUpdateTime": now()})
            status["conditions"] = conditions
            status.setdefault("startTime", now())
            if kind in ("Succeeded", "Failed"):
                status["completionTime"] = now()
        self.fake.update(MPIJOBS, self.ns, self.name, change)

    def pod(self, name: str, role: str, phase: str, index: int | None = None, **status) -> None:
        labels = {JOB_NAME_LABEL: self.name, JOB_ROLE_LABEL: role, "training.kubeflow.org/operator-name": "mpi-operator"}
        if index is not None:
            labels["training.kubeflow.org/replica-index"] = str(index)
        container = f"mpi-{role}"
        terminated = {"exitCode": status.pop("exit_code"), "reason": "Error" if phase == "Failed" else "Completed"} \
            if "exit_code" in status else None
        state = {"terminated": terminated} if terminated else ({"running": {"startedAt": now()}} if phase == "Running"
                                                             else {"waiting": {"reason": "ContainerCreating"}})
        pod = self.fake.get(PODS, self.ns, name) or {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                         "labels": labels, "ownerReferences": [{"apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob",
                                                                "name": self.name, "uid": self.uid}]},
            "spec": {"containers": [{"name": container, "image": "train"}], "nodeName": f"node-{index or 0}"},
        }
        pod["status"] = {"phase": phase, **status, "containerStatuses": [{
            "name": container, "ready": phase == "Running", "restartCount": 0, "image": "train", "imageID": "train",
            "state": state}]}
        self.fake.put(PODS, self.ns, pod)

    def log(self, *lines: str) -> None:
        self.fake.append_log(self.ns, self.launcher, *lines)

    def run(self) -> None:
        if self.scenario == "pending" or not self.sleep():
            return
        self.condition("Created", "MPIJobCreated", f"MPIJob {self.ns}/{self.name} is created.")
        for i in range(self.workers):
            self.pod(f"{self.name}-worker-{i}", "worker", "Running", i)
        if not self.sleep():
            return
        self.pod(self.launcher, "launcher", "Running")
        self.condition("Running", "MPIJobRunning", f"MPIJob {self.ns}/{self.name} is running.")
        self.log(*[f"worker {self.name}-worker-{i}.{self.name}.{self.ns}.svc is reachable" for i in range(self.workers)])
        getattr(self, "_" + self.scenario.replace("-", "_"))()

    def _steps(self, first: int, last: int) -> bool:
        for step in range(first, last):
            self.log(f"step {step} loss {1.0 / (step + 1):.3f}")
            if not self.sleep():
                return False
        return True

    def _succeed(self) -> None:
        if self._steps(0, 3):
            self.log("training finished")
            self.pod(self.launcher, "launcher", "Succeeded", exit_code=0)
            self.condition("Succeeded", "MPIJobSucceeded", f"MPIJob {self.ns}/{self.name} successfully completed.")

    def _succeed_slowly(self) -> None:
        """Write log lines until the runner has followed the log three times (two reconnects)."""
        step, deadline = 0, time.monotonic() + 20
        while self.fake.log_follows.get((self.ns, self.launcher), 0) < 3 and time.monotonic() < deadline:
            if not self._steps(step, step + 1):
                return
            step += 1
        if self._steps(step, step + 2):
            self.log("training finished")
            self.pod(self.launcher, "launcher", "Succeeded", exit_code=0)
            self.condition("Succeeded", "MPIJobSucceeded", f"MPIJob {self.ns}/{self.name} successfully completed.")

    def _fail(self) -> None:
        if self._steps(0, 2):
            self.log("Traceback (most recent call last):", '  File "train.py", line 1', "ValueError: loss is NaN")
            self.pod(self.launcher, "launcher", "Failed", exit_code=1)
            self.condition("Failed", "BackoffLimitExceeded/Error", "Job has reached the specified backoff limit")

    def _hang(self) -> None:
        step = 0
        while self._steps(step, step + 1):
            step += 1

    def _evict(self) -> None:
        if self._steps(0, 1):
            self.pod(f"{self.name}-worker-{self.workers - 1}", "worker", "Failed", self.workers - 1,
                     reason="Evicted", message="The node was low on resource: memory.",
                     conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}])
            if self.sleep():
                self.log("ssh: connect to host worker port 2222: Connection refused", "mpirun exited with status 255")
                self.pod(self.launcher, "launcher", "Failed", exit_code=255)
                self.condition("Failed", "MPIJobEvicted", f"1/{self.workers} workers are evicted")

    def _node_lost(self) -> None:
        if self._steps(0, 1):
            self.fake.remove(PODS, self.ns, f"{self.name}-worker-0")  # the node and its pods are gone
            if self.sleep(40):
                self.pod(f"{self.name}-worker-0", "worker", "Pending", 0)  # recreated, waits for a node
                self._hang()


def _admit_mpijob(body: dict, strict: bool) -> tuple[dict, list[str]]:
    """The API server's handling of an MPIJob create against the CRD's structural schema."""
    name = body.get("metadata", {}).get("name", "")
    violations = crd.schema_violations(body)
    unknown = [v.split(": ")[0] for v in violations if v.endswith(": unknown field")]
    if unknown and strict:
        raise ApiError(400, "BadRequest", "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown))
    body = copy.deepcopy(body)
    for path in unknown:  # not strict: pruned, with a warning
        _prune(body, path)
    others = [v for v in violations if not v.endswith(": unknown field")]
    if others:
        causes = [{"reason": "FieldValueInvalid", "message": v.split(": ", 1)[1], "field": v.split(": ", 1)[0]}
                  for v in others]
        raise ApiError(422, "Invalid", f'MPIJob.kubeflow.org "{name}" is invalid: [{", ".join(others)}]', causes)
    return body, [f'unknown field "{p}"' for p in unknown]


def _prune(body: dict, dotted: str) -> None:
    import re

    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", dotted)]
    node = body
    for part in parts[:-1]:
        node = node[part]
    node.pop(parts[-1], None)


def _merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _subset(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _parse_selector(text: str) -> dict:
    """``a=b,c==d,e`` -> {"a": "b", "c": "d", "e": None} (None: the key must exist)."""
    out = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.replace("==", "=").partition("=")
        out[key] = value if sep else None
    return out


def _matches(obj: dict, labels: dict, fields: dict) -> bool:
    obj_labels = obj["metadata"].get("labels", {})
    for key, value in labels.items():
        if key not in obj_labels or (value is not None and obj_labels[key] != value):
            return False
    for key, value in fields.items():
        node = obj
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if node != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeKubernetes

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self): self._handle("GET")       # noqa: E704
    def do_POST(self): self._handle("POST")     # noqa: E704
    def do_PUT(self): self._handle("PUT")       # noqa: E704
    def do_PATCH(self): self._handle("PATCH")   # noqa: E704
    def do_DELETE(self): self._handle("DELETE")  # noqa: E704

    def _handle(self, method: str) -> None:
        fake = self.server_fake
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fake.requests.append((method, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            resource, namespace, name, sub = _route(url.path)
            if sub and sub[0] == "proxy":
                code, body = fake.proxy(namespace, name, method, "/" + "/".join(sub[1:]), raw)
                return self._json(code, body)
            if method == "GET" and name is None:
                return self._list(resource, namespace, query)
            if method == "GET" and sub == ["log"]:
                return self._log(namespace, name, query)
            if method == "GET":
                obj = fake.get(resource, namespace, name)
                if obj is None:
                    raise ApiError(404, "NotFound", f'{resource.split("/")[-1]} "{name}" not found')
                return self._json(200, obj)
            body = json.loads(raw or b"{}")
            if method == "POST":
                created, warnings = fake.create(resource, namespace, body, query)
                return self._json(201, created, warnings)
            if method == "PUT":
                return self._json(200, fake.replace(resource, namespace, name, body))
            if method == "PATCH":
                if isinstance(body, list):
                    raise ApiError(415, "UnsupportedMediaType", "json-patch is not supported by the fake")
                return self._json(200, fake.patch(resource, namespace, name, body))
            if method == "DELETE":
                return self._json(200, fake.remove(resource, namespace, name))
        except ApiError as e:
            return self._json(e.code, e.body)
        self._json(405, status_body(405, "MethodNotAllowed", f"{method} {url.path}"))

    def _json(self, code: int, body: dict, warnings: list[str] = ()) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for warning in warnings:
            self.send_header("Warning", f'299 - "{warning}"')
        self.end_headers()
        self.wfile.write(data)

    def _list(self, resource: str, namespace: str, query: dict) -> None:
        fake = self.server_fake
        labels = _parse_selector(query.get("labelSelector", ""))
        fields = {k: v for k, v in _parse_selector(query.get("fieldSelector", "")).items()}
        if query.get("watch") in ("true", "1", "True"):
            return self._watch(resource, namespace, labels, fields, query)
        with fake._lock:
            items = [o for o in fake.list(resource, namespace) if _matches(o, labels, fields)]
            rv = str(fake._rv)
        self._json(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items})

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()

    def _watch(self, resource: str, namespace: str, labels: dict, fields: dict, query: dict) -> None:
        fake = self.server_fake
        deadline = time.monotonic() + float(query.get("timeoutSeconds", 30))
        since = int(query.get("resourceVersion") or 0)
        self._stream()
        with fake._lock:
            if not since:  # no resource version: the current state first, as ADDED events
                pending = [(fake._rv, "ADDED", o) for o in fake.list(resource, namespace) if _matches(o, labels, fields)]
                since = fake._rv
            else:
                pending = []
        while True:
            for _, kind, obj in pending:
                self.wfile.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                self.wfile.flush()
            with fake._lock:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or fake._stopping:
                    return
                new = [(rv, kind, obj) for rv, r, ns, kind, obj in fake.events
                       if rv > since and r == resource and ns == namespace and _matches(obj, labels, fields)]
                if not new:
                    fake._changed.wait(timeout=remaining)
                    new = [(rv, kind, obj) for rv, r, ns, kind, obj in fake.events
                           if rv > since and r == resource and ns == namespace and _matches(obj, labels, fields)]
                since = max([since] + [e[0] for e in fake.events]) if fake.events else since
                pending = new

    def _log(self, namespace: str, pod: str, query: dict) -> None:
        fake = self.server_fake
        if fake.get(PODS, namespace, pod) is None:
            raise ApiError(404, "NotFound", f'pods "{pod}" not found')
        follow = query.get("follow") in ("true", "1", "True")
        if follow:
            with fake._lock:
                fake.log_follows[(namespace, pod)] = fake.log_follows.get((namespace, pod), 0) + 1
        sent = 0
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        while True:
            with fake._lock:
                lines = fake.logs.get((namespace, pod), [])
                if "tailLines" in query and not follow:
                    lines = lines[-int(query["tailLines"]):]
                chunk, sent = lines[sent:], len(lines)
                obj = fake.get(PODS, namespace, pod)
                done = (not follow or obj is None or obj["status"].get("phase") in TERMINAL_PHASES
                        or fake._stopping)
            if chunk:
                self.wfile.write("".join(line + "\n" for line in chunk).encode())
                self.wfile.flush()
                with fake._lock:
                    cut = follow and not done and fake.log_stream_breaks > 0
                    fake.log_stream_breaks -= cut
                if cut:
                    return
            if done:
                with fake._lock:  # lines written while the pod ended
                    rest = fake.logs.get((namespace, pod), [])[sent:] if follow else []
                if rest:
                    self.wfile.write("".join(line + "\n" for line in rest).encode())
                return
            with fake._lock:
                fake._changed.wait(timeout=0.5)


def _route(path: str) -> tuple[str, str, str | None, list[str]]:
    """(resource key, namespace, name, subresource parts) of a namespaced API path."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["api", "v1"]:
        group_version, rest = "/v1", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    if len(rest) < 2 or rest[0] != "namespaces":
        raise ApiError(404, "NotFound", f"only namespaced resources are served ({path})")
    namespace, rest = rest[1], rest[2:]
    if not rest:
        raise ApiError(404, "NotFound", path)
    resource = f"{group_version}/{rest[0]}"
    name = rest[1] if len(rest) > 1 else None
    return resource, namespace, name, rest[2:]
