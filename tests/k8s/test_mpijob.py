"""The MPIJob builder: valid against the real CRD for every shape, and shaped the way Horovod needs."""

import shlex
import socket
import subprocess
import threading

import pytest

from maskrcnn.images import TRAIN_IMAGE
from maskrcnn.k8s import crd
from maskrcnn.k8s.mpijob import (
    EFA_RESOURCE, GPU_RESOURCE, LABEL_RUN_ID, DataVolume, MPIJobOptions, SlotResources, build_mpijob,
    label_value, launcher_script,
)

COMMAND = "python -m maskrcnn.cli train --shards /data/shards --model-dir /data/model TRAIN.MAX_STEPS=10"


def _build(nodes, gpus, **options):
    return build_mpijob(name="mrcnn", namespace="ml", nodes=nodes, gpus_per_node=gpus, command=COMMAND,
                        data=DataVolume("coco-data"), options=MPIJobOptions(**options))


def _replica(job, kind):
    return job["spec"]["mpiReplicaSpecs"][kind]


def _container(job, kind):
    return _replica(job, kind)["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("nodes, gpus", [(1, 1), (2, 8), (4, 8)])
@pytest.mark.parametrize("efa", [0, 4])
def test_every_shape_validates_against_the_crd_with_unknown_fields_rejected(nodes, gpus, efa):
    job = _build(nodes, gpus, efa_devices=efa, run_id="run-1",
                 node_selector={"node.kubernetes.io/instance-type": "p4d.24xlarge"},
                 tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 service_account="maskrcnn", env={"EXTRA": "1"})
    crd.validate_mpijob(job)
    assert job["spec"]["slotsPerWorker"] == gpus
    assert _replica(job, "Worker")["replicas"] == nodes
    assert _replica(job, "Launcher")["replicas"] == 1


def test_the_validator_can_fail_on_builder_output():
    job = _build(2, 8)
    _container(job, "Worker")["resources"]["limit"] = {"cpu": "1"}  # typo of limits
    with pytest.raises(crd.MPIJobValidationError, match=r"resources\.limit: unknown field"):
        crd.validate_mpijob(job)


def test_launcher_runs_mpirun_with_one_rank_per_gpu_and_the_horovod_environment():
    job = _build(4, 8)
    command = _container(job, "Launcher")["command"]
    assert command[:2] == ["/bin/bash", "-c"]
    mpirun = shlex.split(command[2].splitlines()[-1])
    assert mpirun[:2] == ["exec", "mpirun"]
    assert mpirun[2:8] == ["-np", "32", "-bind-to", "none", "-map-by", "slot"]
    exported = {mpirun[i + 1] for i, arg in enumerate(mpirun) if arg == "-x"}
    assert {"NCCL_DEBUG", "LD_LIBRARY_PATH", "PATH", "HOROVOD_FUSION_THRESHOLD"} <= exported
    assert "FI_PROVIDER" not in exported
    joined = " ".join(mpirun)
    assert "-mca pml ob1 -mca btl ^openib" in joined
    assert joined.endswith(COMMAND)
    env = {e["name"]: e["value"] for e in _container(job, "Launcher")["env"]}
    assert env["NCCL_DEBUG"] == "INFO" and exported - {"LD_LIBRARY_PATH", "PATH"} == set(env)


def test_launcher_waits_for_fully_qualified_worker_names_and_workers_ready():
    job = _build(2, 8)
    assert job["spec"]["launcherCreationPolicy"] == "WaitForWorkersReady"
    script = _container(job, "Launcher")["command"][2]
    assert "mrcnn-worker-0.mrcnn.ml.svc mrcnn-worker-1.mrcnn.ml.svc" in script
    assert "/dev/tcp/$host/2222" in script


def test_resources_grow_with_gpus_and_efa_only_when_asked():
    small, big = _build(1, 1), _build(2, 8)
    small_res, big_res = _container(small, "Worker")["resources"], _container(big, "Worker")["resources"]
    per_slot = SlotResources()
    assert big_res["requests"]["cpu"] == f"{int(per_slot.cpu * 8 * 1000)}m"
    assert big_res["requests"]["memory"] == f"{int(per_slot.memory_gib * 8 * 1024)}Mi"
    assert small_res["requests"]["cpu"] == f"{int(per_slot.cpu * 1000)}m"
    assert big_res["limits"][GPU_RESOURCE] == "8" and small_res["limits"][GPU_RESOURCE] == "1"
    assert EFA_RESOURCE not in big_res["limits"] and EFA_RESOURCE not in big_res["requests"]
    assert GPU_RESOURCE not in _container(big, "Launcher")["resources"]["limits"]

    efa = _build(2, 8, efa_devices=4)
    res = _container(efa, "Worker")["resources"]
    assert res["requests"][EFA_RESOURCE] == res["limits"][EFA_RESOURCE] == "4"
    env = {e["name"]: e["value"] for e in _container(efa, "Launcher")["env"]}
    assert env["FI_PROVIDER"] == "efa"
    assert "-x FI_PROVIDER" in _container(efa, "Launcher")["command"][2]


def test_cpu_only_job_has_one_slot_and_no_gpu_request():
    job = _build(2, 0)
    crd.validate_mpijob(job)
    assert job["spec"]["slotsPerWorker"] == 1
    assert GPU_RESOURCE not in _container(job, "Worker")["resources"]["limits"]
    assert "-np 2 " in _container(job, "Launcher")["command"][2]


def test_pods_share_the_data_pvc_get_memory_shm_no_istio_and_run_labels():
    job = _build(2, 8, run_id="3f1c-run", node_selector={"gpu": "a100"},
                 tolerations=[{"key": "gpu", "operator": "Exists"}])
    assert job["metadata"]["labels"][LABEL_RUN_ID] == "3f1c-run"
    run_policy = job["spec"]["runPolicy"]
    assert run_policy["cleanPodPolicy"] == "Running" and run_policy["backoffLimit"] == 0
    assert run_policy["ttlSecondsAfterFinished"] > 0
    for kind in ("Launcher", "Worker"):
        template = _replica(job, kind)["template"]
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        assert template["metadata"]["labels"][LABEL_RUN_ID] == "3f1c-run"
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "coco-data"
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        mounts = {m["name"]: m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert mounts == {"data": "/data", "dshm": "/dev/shm"}
        assert template["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert _replica(job, "Worker")["template"]["spec"]["nodeSelector"] == {"gpu": "a100"}
    assert "nodeSelector" not in _replica(job, "Launcher")["template"]["spec"]


def test_builder_is_pure_and_defaults_to_the_project_train_image():
    assert _build(2, 8, run_id="r") == _build(2, 8, run_id="r")
    assert _container(_build(1, 1), "Worker")["image"] == TRAIN_IMAGE


def test_long_or_odd_run_ids_become_valid_label_values():
    value = label_value("projects/x/runs/" + "a" * 80)
    assert len(value) <= 63 and crd.label_violations({"k": value}, "l") == []
    assert label_value("abc-123") == "abc-123"
    assert label_value("run/1") != label_value("run/2")
    crd.validate_mpijob(_build(1, 1, run_id="projects/x/runs/" + "a" * 80))


def _run_script(hosts, port, wait, tmp_path):
    fake_mpirun = tmp_path / "mpirun"
    fake_mpirun.write_text("#!/bin/sh\necho \"mpirun $*\"\n")
    fake_mpirun.chmod(0o755)
    script = launcher_script(hosts, port, wait, [str(fake_mpirun), "-np", "2", "train"])
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


def test_launcher_script_runs_mpirun_once_workers_answer(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: [server.accept()[0].close() for _ in range(2)], daemon=True).start()
    result = _run_script(["localhost", "localhost"], port, 10, tmp_path)
    server.close()
    assert result.returncode == 0, result.stderr
    assert "mpirun -np 2 train" in result.stdout
    assert result.stdout.count("worker localhost is reachable") == 2


def test_launcher_script_gives_up_when_a_worker_never_answers(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _run_script(["localhost"], port, 1, tmp_path)
    assert result.returncode == 1
    assert "did not answer on port" in result.stderr and "mpirun" not in result.stdout
