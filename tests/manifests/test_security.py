"""The security lint passes on every rendered overlay, and each of its rules catches a bad object."""

from __future__ import annotations

import copy

import pytest

from .render import KUSTOMIZATIONS, rendered
from .security_lint import violations


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_manifests_pass_the_security_lint(kustomization):
    assert violations(rendered(kustomization)) == []


GOOD_POD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
    "initContainers": [{
        "name": "init", "image": "x",
        "securityContext": {"allowPrivilegeEscalation": False},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }],
    "containers": [{
        "name": "main", "image": "x",
        "securityContext": {"allowPrivilegeEscalation": False},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "env": [{"name": "MODE", "value": "fast"},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "k"}}}],
    }],
}


def deployment(pod: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": pod}}}


def mutated(change) -> dict:
    pod = copy.deepcopy(GOOD_POD)
    change(pod)
    return deployment(pod)


def test_good_pod_passes():
    assert violations([deployment(GOOD_POD)]) == []


BAD_PODS = {
    "privileged": lambda p: p["containers"][0]["securityContext"].update(privileged=True),
    "allowPrivilegeEscalation": lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    "adds capabilities": lambda p: p["containers"][0]["securityContext"].update(capabilities={"add": ["NET_ADMIN"]}),
    "hostNetwork": lambda p: p.update(hostNetwork=True),
    "hostPID": lambda p: p.update(hostPID=True),
    "hostPath": lambda p: p.update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
    "hostPort": lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
    "no memory limit": lambda p: p["initContainers"][0]["resources"]["limits"].pop("memory"),
    "no cpu request": lambda p: p["containers"][0]["resources"]["requests"].pop("cpu"),
    "runAsNonRoot": lambda p: p["securityContext"].pop("runAsNonRoot"),
    "runAsNonRoot is not true": lambda p: p["containers"][0]["securityContext"].update(runAsUser=0),
    "looks like a credential": lambda p: p["containers"][0]["env"].append(
        {"name": "BOTO_CONFIG_HINT", "value": "AKIAIOSFODNN7EXAMPLE"}),
    "is a literal": lambda p: p["containers"][0]["env"].append({"name": "DB_PASSWORD", "value": "hunter2"}),
}


@pytest.mark.parametrize("expected", sorted(BAD_PODS))
def test_each_pod_rule_catches_its_violation(expected):
    problems = violations([mutated(BAD_PODS[expected])])
    assert problems and all(expected in p for p in problems), problems


def test_pods_inside_cronjobs_and_mpijobs_are_linted():
    bad = copy.deepcopy(GOOD_POD)
    bad["containers"][0]["securityContext"]["privileged"] = True
    cronjob = {"kind": "CronJob", "metadata": {"name": "c"},
               "spec": {"jobTemplate": {"spec": {"template": {"spec": bad}}}}}
    mpijob = {"kind": "MPIJob", "metadata": {"name": "m"},
              "spec": {"mpiReplicaSpecs": {"Worker": {"template": {"spec": bad}}}}}
    assert [p.split(":")[0] for p in violations([cronjob, mpijob])] == ["CronJob/c", "MPIJob/m"]


@pytest.mark.parametrize("field", ["verbs", "resources", "apiGroups"])
def test_rbac_wildcards_are_rejected(field):
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    rule[field] = ["*"]
    role = {"kind": "Role", "metadata": {"name": "r"}, "rules": [rule]}
    assert violations([role]) == [f"Role/r: rules[0].{field}: wildcard"]


def test_cluster_wide_rbac_is_rejected():
    assert violations([{"kind": "ClusterRoleBinding", "metadata": {"name": "b"}}])


@pytest.mark.parametrize("field", ["data", "stringData"])
def test_secrets_with_data_are_rejected(field):
    secret = {"kind": "Secret", "metadata": {"name": "s"}, field: {"key": "dmFsdWU="}}
    assert violations([secret]) and not violations([{"kind": "Secret", "metadata": {"name": "s"}}])


def test_credentials_are_referenced_not_inlined():
    """The manifests name the AWS credentials only as an optional Secret reference."""
    objects = rendered("base")
    assert not [o for o in objects if o["kind"] == "Secret"]
    refs = {ref["secretRef"]["name"] for o in objects for ref in _env_from(o)}
    assert refs == {"maskrcnn-aws-credentials"}


def _env_from(obj):
    from .render import containers, pod_specs

    for _, pod in pod_specs(obj):
        for container in containers(pod):
            yield from container.get("envFrom") or []
