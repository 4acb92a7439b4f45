"""Build the MPIJob (mpi-operator ``kubeflow.org/v2beta1``) that trains with Horovod across GPU nodes.

``build_mpijob`` is a pure function: arguments in, manifest dict out, nothing read from the
environment or the cluster. It avoids the failures mpi-operator users report most:

- ``launcherCreationPolicy: WaitForWorkersReady`` and, inside the launcher, a wait loop until every
  worker's fully qualified DNS name resolves and its ssh port answers, so ``mpirun`` never races
  CoreDNS or sshd start-up;
- worker host names are the fully qualified ``<job>-worker-<i>.<job>.<namespace>.svc``;
- CPU and memory requests grow with the GPUs per node (a 1-GPU request on an 8-GPU node lets the
  scheduler pack other work beside it and starves the input pipeline);
- EFA resources only when asked for, and then always with their resource request: without the
  ``vpc.amazonaws.com/efa`` request no EFA device is mounted and NCCL silently falls back to TCP;
- ``/dev/shm`` is a memory-backed emptyDir (the container runtime's 64 MiB default breaks NCCL);
- the istio sidecar is disabled (it blocks the launcher's ssh and keeps finished pods alive).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from maskrcnn.images import TRAIN_IMAGE
from maskrcnn.k8s.crd import API_VERSION, KIND

# Labels and annotations this project puts on what it creates (the runner selects by them).
LABEL_APP = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_RUN_ID = "maskrcnn.kubeflow.org/run-id"
LABEL_ATTEMPT = "maskrcnn.kubeflow.org/attempt"
ANNOTATION_RUN_ID = "maskrcnn.kubeflow.org/run-id"
MANAGED_BY = "maskrcnn-k8s"
# Labels mpi-operator puts on the pods it creates.
OPERATOR_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
OPERATOR_JOB_ROLE_LABEL = "training.kubeflow.org/job-role"

LAUNCHER_CONTAINER = "mpi-launcher"
WORKER_CONTAINER = "mpi-worker"
# mpi-operator's base image recipe runs sshd as this non-root user on this port.
MPI_USER_ID = 1000
MPI_HOME = "/home/mpiuser"
SSH_PORT = 2222

# Environment that every rank gets (forwarded by ``mpirun -x``).
HOROVOD_NCCL_ENV: dict[str, str] = {
    "NCCL_DEBUG": "INFO",                        # the NCCL transport line in the log shows EFA vs TCP
    "HOROVOD_FUSION_THRESHOLD": "67108864",      # 64 MiB tensor fusion buffer
    "HOROVOD_CYCLE_TIME": "5",                   # ms between fusion cycles
    "HOROVOD_NUM_NCCL_STREAMS": "1",
    "TF_GPU_THREAD_MODE": "gpu_private",         # dedicated GPU launch threads per device (NVIDIA's advice)
    "TF_CPP_MIN_LOG_LEVEL": "1",
}
# Added with EFA: libfabric's EFA provider for the aws-ofi-nccl plugin, GPUDirect RDMA (p4d/p5;
# override with --env FI_EFA_USE_DEVICE_RDMA=0 on instances without it), fork safety (tf.data forks).
EFA_ENV: dict[str, str] = {
    "FI_PROVIDER": "efa",
    "FI_EFA_USE_DEVICE_RDMA": "1",
    "FI_EFA_FORK_SAFE": "1",
}
EFA_RESOURCE = "vpc.amazonaws.com/efa"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class SlotResources:
    """What one slot (one GPU, or one process on a CPU-only cluster) asks of its node.

    Worker requests are these times the slots per worker; requests equal limits (Guaranteed QoS,
    so the kubelet's static CPU manager can pin cores). ``memory_gib`` must cover the slot's share
    of ``/dev/shm``, which counts against the container's memory.
    """

    cpu: float = 8.0                 # p4d/p5: 96-192 vCPUs for 8 GPUs, minus room for system daemons
    memory_gib: float = 48.0
    shm_gib: float = 4.0             # /dev/shm per slot (NCCL buffers, tf.data shared memory)
    launcher_cpu: float = 1.0
    launcher_memory_gib: float = 2.0
    efa_hugepages_gib: float = 5.0   # 2 MiB huge pages the EFA driver registers, per worker


@dataclass(frozen=True)
class DataVolume:
    """The shared ReadWriteMany PVC (shards, checkpoints, model dir) and where pods see it."""

    claim_name: str
    mount_path: str = "/data"
    read_only: bool = False


@dataclass(frozen=True)
class MPIJobOptions:
    """Everything of a training MPIJob besides its shape and program (all optional)."""

    efa_devices: int = 0                              # EFA interfaces per worker node; 0 = no EFA
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping] = ()
    run_id: str = ""                                  # the pipeline run this job belongs to
    attempt: int = 0                                  # resubmission number (0 = first)
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    ttl_seconds_after_finished: int = 3600
    backoff_limit: int = 0                            # the runner resubmits on preemption itself
    active_deadline_seconds: int | None = None
    worker_wait_seconds: int = 600                    # launcher gives up if workers do not answer
    image_pull_policy: str = "IfNotPresent"


def build_mpijob(
    *,
    name: str,
    namespace: str,
    nodes: int,
    gpus_per_node: int,
    command: str | Sequence[str],
    data: DataVolume,
    image: str = TRAIN_IMAGE,
    resources: SlotResources = SlotResources(),
    options: MPIJobOptions = MPIJobOptions(),
) -> dict:
    """The MPIJob manifest for ``nodes`` workers with ``gpus_per_node`` GPUs each.

    ``command`` is the training program each rank runs (a shell string or an argv list), for
    example ``python -m maskrcnn.cli train --shards /data/shards --model-dir /data/model``.
    ``gpus_per_node=0`` builds a CPU-only job with one rank per worker (test clusters).
    Validate the result with ``maskrcnn.k8s.crd.validate_mpijob``.
    """
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    if gpus_per_node < 0:
        raise ValueError(f"gpus_per_node must be >= 0, got {gpus_per_node}")
    slots = max(gpus_per_node, 1)
    labels = job_labels(options)
    env = {**HOROVOD_NCCL_ENV, **(EFA_ENV if options.efa_devices else {}), **options.env}
    hosts = worker_hosts(name, namespace, nodes)
    mpirun = mpirun_argv(nodes * slots, env_names=list(env), command=command)
    launcher_command = ["/bin/bash", "-c", launcher_script(hosts, SSH_PORT, options.worker_wait_seconds, mpirun)]
    annotations = {ANNOTATION_RUN_ID: options.run_id} if options.run_id else {}  # the unshortened id
    run_policy = {
        "cleanPodPolicy": "Running",
        "ttlSecondsAfterFinished": options.ttl_seconds_after_finished,
        "backoffLimit": options.backoff_limit,
    }
    if options.active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = options.active_deadline_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "slotsPerWorker": slots,
            "mpiImplementation": "OpenMPI",
            "launcherCreationPolicy": "WaitForWorkersReady",
            "sshAuthMountPath": f"{MPI_HOME}/.ssh",
            "runPolicy": run_policy,
            "mpiReplicaSpecs": {
                "Launcher": {
                    "replicas": 1,
                    "restartPolicy": "Never",
                    "template": _pod_template(
                        labels, options, data, shm_gib=0, node_selector={},
                        container=_container(
                            LAUNCHER_CONTAINER, image, options, data, command=launcher_command, env=env,
                            resources=_requests_and_limits(resources.launcher_cpu, resources.launcher_memory_gib))),
                },
                "Worker": {
                    "replicas": nodes,
                    "restartPolicy": "Never",
                    "template": _pod_template(
                        labels, options, data, shm_gib=resources.shm_gib * slots, node_selector=dict(options.node_selector),
                        container=_container(
                            WORKER_CONTAINER, image, options, data,
                            command=["/usr/sbin/sshd", "-De", "-f", f"{MPI_HOME}/.sshd_config"], env={},
                            resources=_worker_resources(resources, gpus_per_node, slots, options.efa_devices),
                            ports=[{"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"}])),
                },
            },
        },
    }


def job_labels(options: MPIJobOptions) -> dict[str, str]:
    """Labels on the MPIJob and its pods; ``run-id`` ties them to their pipeline run."""
    labels = {LABEL_APP: "maskrcnn", LABEL_COMPONENT: "training", LABEL_MANAGED_BY: MANAGED_BY,
              LABEL_ATTEMPT: str(options.attempt)}
    if options.run_id:
        labels[LABEL_RUN_ID] = label_value(options.run_id)
    return {**labels, **options.labels}


def label_value(text: str) -> str:
    """``text`` as a valid label value: kept when valid, else cleaned and suffixed with a short hash."""
    if len(text) <= 63 and re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^-A-Za-z0-9_.]+", "-", text)[:54].strip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


def worker_hosts(name: str, namespace: str, nodes: int) -> list[str]:
    """Fully qualified worker host names, as mpi-operator writes them into the hostfile."""
    return [f"{name}-worker-{i}.{name}.{namespace}.svc" for i in range(nodes)]


def mpirun_argv(num_processes: int, *, env_names: Sequence[str], command: str | Sequence[str]) -> list[str]:
    """``mpirun`` for Horovod over OpenMPI: one rank per slot, env forwarded, TCP/shared-memory for MPI.

    MPI only carries Horovod's control messages (NCCL moves the tensors), so ``pml ob1`` with the
    openib BTL excluded avoids the InfiniBand probing that hangs or warns on cloud nodes.
    """
    argv = ["mpirun", "-np", str(num_processes), "-bind-to", "none", "-map-by", "slot"]
    for name in dict.fromkeys(("LD_LIBRARY_PATH", "PATH", *env_names)):
        argv += ["-x", name]
    argv += ["-mca", "pml", "ob1", "-mca", "btl", "^openib"]
    argv += shlex.split(command) if isinstance(command, str) else list(command)
    return argv


def launcher_script(hosts: Sequence[str], port: int, wait_seconds: int, mpirun: Sequence[str]) -> str:
    """A bash script: wait until every host resolves and accepts TCP on ``port``, then exec ``mpirun``.

    ``WaitForWorkersReady`` only waits for the pods' Ready condition; DNS records of the headless
    Service and sshd can lag behind it, which makes ``mpirun`` fail with "ssh: Could not resolve
    hostname" or "Connection refused" on large jobs.
    """
    return "\n".join([
        "set -euo pipefail",
        f"deadline=$((SECONDS + {int(wait_seconds)}))",
        f"for host in {' '.join(shlex.quote(h) for h in hosts)}; do",
        f"  until getent hosts \"$host\" >/dev/null && (exec 3<>\"/dev/tcp/$host/{int(port)}\") 2>/dev/null; do",
        "    if (( SECONDS >= deadline )); then",
        f"      echo \"worker $host did not answer on port {int(port)} within {int(wait_seconds)} s\" >&2",
        "      exit 1",
        "    fi",
        "    sleep 2",
        "  done",
        "  echo \"worker $host is reachable\"",
        "done",
        "exec " + shlex.join(mpirun),
    ])


def _quantity_gib(gib: float) -> str:
    return f"{int(round(gib * 1024))}Mi"


def _quantity_cpu(cpu: float) -> str:
    return f"{int(round(cpu * 1000))}m"


def _requests_and_limits(cpu: float, memory_gib: float) -> dict:
    amounts = {"cpu": _quantity_cpu(cpu), "memory": _quantity_gib(memory_gib)}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _worker_resources(resources: SlotResources, gpus: int, slots: int, efa_devices: int) -> dict:
    out = _requests_and_limits(resources.cpu * slots, resources.memory_gib * slots)
    extra: dict[str, str] = {}
    if gpus:
        extra[GPU_RESOURCE] = str(gpus)
    if efa_devices:
        extra[EFA_RESOURCE] = str(efa_devices)
        extra["hugepages-2Mi"] = _quantity_gib(resources.efa_hugepages_gib)
    for kind in ("requests", "limits"):
        out[kind].update(extra)
    return out


def _container(name: str, image: str, options: MPIJobOptions, data: DataVolume, *, command: list[str],
               env: Mapping[str, str], resources: dict, ports: list | None = None) -> dict:
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": options.image_pull_policy,
        "command": command,
        "env": [{"name": k, "value": str(v)} for k, v in env.items()],
        "resources": resources,
        "securityContext": {"runAsUser": MPI_USER_ID, "runAsNonRoot": True, "allowPrivilegeEscalation": False},
        "volumeMounts": [
            {"name": "data", "mountPath": data.mount_path, "readOnly": data.read_only},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if ports:
        container["ports"] = ports
    return container


def _pod_template(labels: Mapping[str, str], options: MPIJobOptions, data: DataVolume, *, shm_gib: float,
                  node_selector: dict, container: dict) -> dict:
    shm = {"medium": "Memory"}
    if shm_gib:
        shm["sizeLimit"] = _quantity_gib(shm_gib)
    spec: dict = {
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": data.claim_name, "readOnly": data.read_only}},
            {"name": "dshm", "emptyDir": shm},
        ],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    if options.tolerations:
        spec["tolerations"] = [dict(t) for t in options.tolerations]
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    return {"metadata": {"labels": dict(labels), "annotations": {"sidecar.istio.io/inject": "false"}}, "spec": spec}
