"""A security lint over rendered Kubernetes objects: ``violations(objects) -> ["Kind/name: problem", ...]``.

Rules (each one is exercised on a deliberately bad object in test_security.py):
- no privileged container, no privilege escalation, no added capabilities;
- no host network, PID or IPC namespace, no hostPath volume, no hostPort;
- CPU and memory requests and limits on every container, init containers included;
- runAsNonRoot on every container (pod or container level): every image the project builds runs
  as uid 1000, sshd of the MPI workers included, so there is no exception to grant;
- RBAC: namespaced Roles only, no ``*`` in verbs, resources or API groups;
- no secret in plain text: no Secret object carrying data, no env value that looks like a key.
"""

from __future__ import annotations

import re
from typing import Iterable

from .render import containers, object_name, pod_specs

# Plain env values that are credentials whatever their variable is called.
_SECRET_VALUE = re.compile(
    r"(?:^|[^A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?:$|[^A-Z0-9])"   # AWS access key id
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"                      # PEM private key
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}"                             # GitHub token
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"                           # Slack token
)
# Variables whose value must come from a Secret (valueFrom), never a literal.
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)


def violations(objects: Iterable[dict]) -> list[str]:
    problems: list[str] = []
    for obj in objects:
        name = object_name(obj)
        problems += [f"{name}: {p}" for p in _object_problems(obj)]
    return problems


def _object_problems(obj: dict) -> list[str]:
    kind = obj.get("kind")
    problems = []
    if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
        problems.append("Secret with data in the manifests: reference a Secret created out of band instead")
    if kind in ("ClusterRole", "ClusterRoleBinding"):
        problems.append("cluster-wide RBAC: the steps need rights in their namespace only (Role, RoleBinding)")
    if kind in ("Role", "ClusterRole"):
        for i, rule in enumerate(obj.get("rules") or []):
            for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                if any("*" in str(item) for item in rule.get(field) or []):
                    problems.append(f"rules[{i}].{field}: wildcard")
    for where, pod in pod_specs(obj):
        problems += [f"{where}: {p}" for p in _pod_problems(pod)]
    return problems


def _pod_problems(pod: dict) -> list[str]:
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field}: true")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"volume {volume.get('name')}: hostPath")
    pod_context = pod.get("securityContext") or {}
    for container in containers(pod):
        cname = container.get("name")
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"container {cname}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {cname}: allowPrivilegeEscalation is not false")
        if (context.get("capabilities") or {}).get("add"):
            problems.append(f"container {cname}: adds capabilities {context['capabilities']['add']}")
        run_as_non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        run_as_user = context.get("runAsUser", pod_context.get("runAsUser"))
        if run_as_non_root is not True or run_as_user == 0:
            problems.append(f"container {cname}: runAsNonRoot is not true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"container {cname}: hostPort {port['hostPort']}")
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(kind) or {}):
                    problems.append(f"container {cname}: no {resource} {kind[:-1]}")
        for env in container.get("env") or []:
            value = env.get("value")
            if value is None:
                continue
            if _SECRET_VALUE.search(str(value)):
                problems.append(f"container {cname}: env {env.get('name')} holds what looks like a credential")
            elif _SECRET_NAME.search(str(env.get("name"))) and str(value).strip():
                problems.append(f"container {cname}: env {env.get('name')} is a literal: use valueFrom.secretKeyRef")
    return problems
