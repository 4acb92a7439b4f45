"""How the rendered objects fit together: network reachability, RBAC scope, the retraining chain's
image arguments, and the order a first `kubectl apply -k` runs in."""

from __future__ import annotations

import shutil

import pytest
import yaml

from .render import KUSTOMIZATIONS, MANIFESTS, containers, kustomize, pod_specs, rendered

SERVING_PORT = 8080


def _matches(selector: dict, labels: dict) -> bool:
    """matchLabels semantics (the manifests use no matchExpressions)."""
    assert not selector.get("matchExpressions"), "extend _matches for matchExpressions"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def admits(policies: list[dict], source: dict, target: dict, port: int) -> bool:
    """Whether a pod labelled ``source`` may connect to one labelled ``target`` on ``port``, both in
    the policies' namespace (NetworkPolicy: isolated once selected; allowed if any rule admits)."""
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], target)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None or any("podSelector" in peer and "namespaceSelector" not in peer
                                    and _matches(peer["podSelector"], source) for peer in peers):
                return True
    return False


def _pod_labels(objects, kind, name=None) -> dict:
    obj = next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))
    if kind == "MPIJob":
        return obj["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["metadata"]["labels"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_network_reachability(kustomization):
    objects = rendered(kustomization)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    serving = _pod_labels(objects, "Deployment", "maskrcnn")
    training = _pod_labels(objects, "MPIJob")
    retrain = _pod_labels(objects, "CronJob")
    data = _pod_labels(objects, "Job", "maskrcnn-data")
    # The deploy step's smoke request reaches the server, on its port only.
    assert admits(policies, retrain, serving, SERVING_PORT)
    assert not admits(policies, retrain, serving, 22)
    # Training pods talk to each other on any port (ssh, NCCL, Horovod), nobody else reaches them.
    assert admits(policies, training, training, 2222) and admits(policies, training, training, 43751)
    assert not admits(policies, serving, training, 2222)
    assert not admits(policies, data, training, 2222)
    # Everything else is closed by default.
    assert not admits(policies, training, data, 8080)
    assert not admits(policies, training, serving, SERVING_PORT) or kustomization == "overlays/small"


def test_the_reachability_model_can_say_no():
    deny_all = {"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not admits([deny_all], {"a": "1"}, {"b": "2"}, 80)
    assert admits([], {"a": "1"}, {"b": "2"}, 80)


def test_rbac_is_what_the_steps_need_in_one_namespace():
    objects = rendered("base")
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    assert [r["kind"] for r in roles] == ["Role"]
    granted = {(group, resource) for rule in roles[0]["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == {("kubeflow.org", "mpijobs"), ("", "pods"), ("", "pods/log"), ("apps", "deployments"),
                       ("apps", "replicasets"), ("", "services"), ("", "services/proxy"),
                       ("policy", "poddisruptionbudgets")}
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == ["maskrcnn-runner"]
    # Only the CronJob's pod uses the runner's identity; the workloads get no API token at all.
    accounts = {}
    for obj in objects:
        for _, pod in pod_specs(obj):
            accounts.setdefault(pod.get("serviceAccountName", "default"), []).append(obj["kind"])
    assert accounts["maskrcnn-runner"] == ["CronJob"]
    assert "default" not in accounts
    workload = next(o for o in objects if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "maskrcnn-workload")
    assert workload["automountServiceAccountToken"] is False


def _retrain_image_args(objects) -> dict[str, str]:
    cronjob = next(o for o in objects if o["kind"] == "CronJob")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    out = {}
    for container in containers(pod):
        argv = container["command"]
        if "--image" in argv:
            out[container["name"]] = argv[argv.index("--image") + 1]
    return out


def _container_image(objects, kind, name, container_name) -> str:
    obj = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    return next(c["image"] for _, pod in pod_specs(obj) for c in containers(pod) if c["name"] == container_name)


@pytest.mark.parametrize("overlay", [k for k in KUSTOMIZATIONS if k.startswith("overlays/")])
def test_retraining_uses_the_images_the_overlay_sets(overlay, tmp_path):
    """Retag an overlay as `kustomize edit set image` would: the CronJob's --image arguments follow."""
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    kustomization_file = copy / overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_file.read_text())
    for entry in kustomization["images"]:
        entry["newName"] = entry["name"].replace("ghcr.io/maskrcnn-kubeflow", "registry.example/ml")
        entry["newTag"] = "9.9.9"
    kustomization_file.write_text(yaml.safe_dump(kustomization))
    for objects in (rendered(overlay), kustomize(copy / overlay)):
        assert _retrain_image_args(objects) == {
            "train": _container_image(objects, "MPIJob", "maskrcnn-train", "mpi-worker"),
            "deploy": _container_image(objects, "Deployment", "maskrcnn", "server"),
        }
    assert _retrain_image_args(kustomize(copy / overlay))["train"] == "registry.example/ml/maskrcnn-train:9.9.9"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_a_first_apply_starts_only_what_has_its_input(kustomization):
    """The data Job runs at once; training and evaluation wait, suspended, for their inputs (they
    would fail or hold GPUs idle); serving pods wait for the first model in an init container."""
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in rendered(kustomization)}
    assert not objects["Job/maskrcnn-data"]["spec"].get("suspend")
    assert objects["MPIJob/maskrcnn-train"]["spec"]["runPolicy"]["suspend"] is True
    assert objects["Job/maskrcnn-evaluate"]["spec"]["suspend"] is True
    serve_pod = objects["Deployment/maskrcnn"]["spec"]["template"]["spec"]
    assert [c["name"] for c in serve_pod["initContainers"]] == ["wait-for-model"]
    cronjob = objects["CronJob/maskrcnn-retrain"]["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid" and cronjob["startingDeadlineSeconds"] <= 3600
    assert cronjob["jobTemplate"]["spec"]["backoffLimit"] == 0
