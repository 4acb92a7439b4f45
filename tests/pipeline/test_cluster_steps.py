"""The train and deploy steps with executor=cluster, against the fake Kubernetes API server (real HTTP).

They drive ``maskrcnn k8s train`` / ``maskrcnn k8s deploy`` in-process, as the KFP pods do: the
MPIJob must carry the pipeline's parameters, and the Model / decision outputs must describe what
happened on the cluster.
"""

import json

import pytest

from k8s.fake_apiserver import DEPLOYMENTS, MPIJOBS, FakeKubernetes
from maskrcnn.pipeline.deploy_step import deploy_step, k8s_deploy_args
from maskrcnn.pipeline.train_step import k8s_train_args, train_step
from maskrcnn.utils.io import write_json

NS = "ml"


def _created(fake, resource):
    return [obj for _, res, _, kind, obj in fake.events if res == resource and kind == "ADDED"]


def _write_model_dir(model_dir):
    """What the MPIJob's rank 0 leaves on the volume (the fake runs no training)."""
    (model_dir / "saved_model").mkdir(parents=True)
    write_json(model_dir / "class_map.json", {"1": {"id": 1, "name": "circle"}})
    write_json(model_dir / "train_summary.json", {"steps": 5, "global_batch": 64, "world_size": 16,
                                                  "images_per_second": 100.0, "wall_seconds": 60.0,
                                                  "final_losses": {"total_loss": 1.0}})


def test_train_step_runs_the_mpijob_with_the_pipeline_parameters(tmp_path):
    data_root = tmp_path / "data"
    _write_model_dir(data_root / "runs" / "run-7" / "model")
    with FakeKubernetes(mpijob_scenarios=["succeed"]) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        args = k8s_train_args(run_id="run-7", namespace=NS, image="registry/train:1", nodes=2, gpus_per_node=8,
                              data_volume="coco-pvc", data_root=str(data_root), node_selector={"gpu": "a100"},
                              tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                              timeout_hours=1) + ["--kubeconfig", str(kubeconfig), "--poll-interval", "1"]
        record = train_step(executor="cluster", shards_path=str(data_root / "shards"),
                            run_dir=str(data_root / "runs" / "run-7"), preset="r50-fpn-1x",
                            overrides=["TRAIN.MAX_STEPS=5"], k8s_args=args, data_root=str(data_root),
                            data_volume="coco-pvc")
        (job,) = _created(fake, MPIJOBS)
        assert fake.list(MPIJOBS, NS) == []  # deleted when it ended
    spec = job["spec"]
    assert spec["slotsPerWorker"] == 8
    worker = spec["mpiReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    pod = worker["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "coco-pvc" for v in pod["volumes"])
    assert pod["containers"][0]["image"] == "registry/train:1"
    launcher = json.dumps(spec["mpiReplicaSpecs"]["Launcher"])
    assert f"--model-dir {data_root}/runs/run-7/model" in launcher and "TRAIN.MAX_STEPS=5" in launcher
    assert job["metadata"]["labels"]["maskrcnn.kubeflow.org/run-id"] == "run-7"
    assert (data_root / "runs" / "run-7" / "train-launcher.log").is_file()
    assert record["uri"] == "pvc://coco-pvc/runs/run-7/model" and record["world_size"] == 16


@pytest.mark.parametrize("box_ap, status", [(0.40, "deployed"), (0.10, "refused")])
def test_deploy_step_gates_and_deploys_on_the_cluster(tmp_path, box_ap, status):
    data_root = tmp_path / "data"
    model_dir = data_root / "runs" / "run-7" / "model"
    _write_model_dir(model_dir)
    metrics = tmp_path / "metrics.json"
    write_json(metrics, {"bbox": {"AP": box_ap}, "segm": {"AP": 0.35}, "model_id": "m1"})
    with FakeKubernetes() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        outcome = deploy_step(
            executor="cluster", model_path=str(model_dir), metrics_path=str(metrics), coco_path="", min_box_ap=0.3,
            min_mask_ap=0.3, data_root=str(data_root), port=8080,
            k8s_args=k8s_deploy_args(namespace=NS, image="registry/serve:1", data_volume="coco-pvc",
                                     data_root=str(data_root), min_box_ap=0.3, min_mask_ap=0.3)
            # No cluster DNS here: the smoke request goes through the fake's service proxy instead.
            + ["--kubeconfig", str(kubeconfig), "--poll-interval", "0.05", "--smoke-url", ""],
        )
        deployments = fake.list(DEPLOYMENTS, NS)
    assert outcome.decision["status"] == status
    assert outcome.markdown.startswith(f"# Deploy: {status}")
    if status == "deployed":
        assert outcome.endpoint == f"http://maskrcnn.{NS}.svc.cluster.local:8080"
        (deployment,) = deployments
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry/serve:1"
    else:
        assert outcome.endpoint == "" and deployments == []
    assert (model_dir.parent / "deploy" / "decision.json").is_file()


def test_cluster_smoke_request_goes_straight_to_the_service():
    """The serving NetworkPolicy refuses the API server's proxy, so the step calls the Service itself."""
    args = k8s_deploy_args(namespace=NS, image="registry/serve:1", data_volume="coco-pvc", data_root="/data",
                           min_box_ap=0.3, min_mask_ap=0.3)
    assert args[args.index("--smoke-url") + 1] == f"http://maskrcnn.{NS}.svc.cluster.local:8080/invocations"
