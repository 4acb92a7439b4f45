"""Gate, deploy, smoke request and rollback against the fake API server (real client, real HTTP)."""

import json

import pytest

from maskrcnn.k8s import gate
from maskrcnn.k8s.deploy import DeploySettings, deploy_model, prediction_problems, smoke_image
from maskrcnn.k8s.serving import (
    ServingSpec, build_deployment, build_inference_service, inference_service_problems, model_location,
)
from maskrcnn.errors import UserError

from .fake_apiserver import DEPLOYMENTS, INFERENCE_SERVICES, PDBS, SERVICES, FakeKubernetes

NS = "serving"
SPEC = ServingSpec(name="maskrcnn", namespace=NS, replicas=2)
FAST = DeploySettings(rollout_timeout_seconds=10, poll_seconds=0.05)



def _metrics(tmp_path, box, mask, model_id):
    path = tmp_path / f"metrics-{model_id}.json"
    path.write_text(json.dumps({"bbox": {"AP": box}, "segm": {"AP": mask}, "model_id": model_id}))
    return path


def _deploy(fake, tmp_path, box, mask, model_id, settings=FAST, spec=SPEC):
    uri = f"s3://models/{model_id}"
    return deploy_model(fake.api_client(), spec, metrics_path=_metrics(tmp_path, box, mask, model_id), model_uri=uri,
                        location=model_location(uri), min_box_ap=0.3, min_mask_ap=0.25, settings=settings)


def _served_model(fake):
    deployment = fake.get(DEPLOYMENTS, NS, "maskrcnn")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index("--model-dir") + 1], deployment["metadata"]["annotations"]


def _writes(fake):
    return [(m, p) for m, p in fake.requests if m in ("POST", "PUT", "PATCH", "DELETE") and "/proxy/" not in p]


def test_first_deploy_creates_deployment_service_pdb_and_passes_the_smoke_request(tmp_path):
    with FakeKubernetes() as fake:
        report = _deploy(fake, tmp_path, 0.40, 0.35, "m1")
        assert report.status == "deployed", report.to_dict()
        model_dir, annotations = _served_model(fake)
        assert model_dir == "s3://models/m1"
        assert annotations[gate.ANNOTATION_BOX_AP] == "0.400000" and annotations[gate.ANNOTATION_MODEL_ID] == "m1"
        assert fake.get(SERVICES, NS, "maskrcnn")["spec"]["ports"][0]["port"] == 8080
        assert fake.get(PDBS, NS, "maskrcnn")["spec"]["maxUnavailable"] == 1
        (smoke,) = fake.smoke_requests
        assert smoke["path"] == "/invocations" and set(smoke["request"]) == {"img_id", "img_data"}


def test_better_model_replaces_the_served_one(tmp_path):
    with FakeKubernetes() as fake:
        assert _deploy(fake, tmp_path, 0.40, 0.35, "m1").status == "deployed"
        report = _deploy(fake, tmp_path, 0.42, 0.36, "m2")
        assert report.status == "deployed"
        model_dir, annotations = _served_model(fake)
        assert model_dir == "s3://models/m2" and annotations[gate.ANNOTATION_MODEL_ID] == "m2"
        assert annotations["deployment.kubernetes.io/revision"] == "2"


@pytest.mark.parametrize("box, mask, needle", [
    (0.20, 0.35, "(threshold)"),        # below the threshold
    (0.41, 0.30, "(deployed model)"),   # worse mask AP than the served model
])
def test_gate_refusal_changes_nothing(tmp_path, box, mask, needle):
    with FakeKubernetes() as fake:
        assert _deploy(fake, tmp_path, 0.40, 0.35, "m1").status == "deployed"
        before, writes_before = fake.get(DEPLOYMENTS, NS, "maskrcnn"), len(_writes(fake))
        report = _deploy(fake, tmp_path, box, mask, "m2")
        assert report.status == "refused" and needle in report.reason
        assert len(_writes(fake)) == writes_before, "a refused model must not touch the cluster"
        assert fake.get(DEPLOYMENTS, NS, "maskrcnn") == before


def test_rollout_failure_rolls_back_to_the_previous_template(tmp_path):
    with FakeKubernetes(rollout_fails=lambda d: "bad" in json.dumps(d["spec"]["template"])) as fake:
        assert _deploy(fake, tmp_path, 0.40, 0.35, "m1").status == "deployed"
        template_before = fake.get(DEPLOYMENTS, NS, "maskrcnn")["spec"]["template"]
        report = _deploy(fake, tmp_path, 0.45, 0.40, "bad")
        assert report.status == "rolled_back" and "ProgressDeadlineExceeded" in report.reason
        model_dir, annotations = _served_model(fake)
        assert model_dir == "s3://models/m1" and annotations[gate.ANNOTATION_MODEL_ID] == "m1"
        assert fake.get(DEPLOYMENTS, NS, "maskrcnn")["spec"]["template"] == template_before
        assert [s["step"] for s in report.steps][-2:] == ["rollout", "roll back"]


def test_smoke_failure_rolls_back(tmp_path):
    with FakeKubernetes(smoke_fails=lambda d: "m2" in json.dumps(d["spec"]["template"])) as fake:
        assert _deploy(fake, tmp_path, 0.40, 0.35, "m1").status == "deployed"
        report = _deploy(fake, tmp_path, 0.45, 0.40, "m2")
        assert report.status == "rolled_back" and "smoke request failed: HTTP 500" in report.reason
        assert _served_model(fake)[0] == "s3://models/m1"
        # A later deploy compares against the model that is really served (m1), not the rolled-back one.
        assert gate.deployed_from_annotations(_served_model(fake)[1]).model_id == "m1"


def test_failed_first_deploy_leaves_nothing_behind(tmp_path):
    with FakeKubernetes(rollout_fails=lambda d: True) as fake:
        report = _deploy(fake, tmp_path, 0.40, 0.35, "m1")
        assert report.status == "rolled_back" and "nothing is deployed" in report.reason
        assert fake.list(DEPLOYMENTS, NS) == [] and fake.list(SERVICES, NS) == [] and fake.list(PDBS, NS) == []


def test_kserve_variant_deploys_and_rolls_back(tmp_path):
    settings = DeploySettings(rollout_timeout_seconds=10, poll_seconds=0.05, kserve=True)
    with FakeKubernetes(rollout_fails=lambda o: "bad" in json.dumps(o["spec"])) as fake:
        assert _deploy(fake, tmp_path, 0.40, 0.35, "m1", settings).status == "deployed"
        report = _deploy(fake, tmp_path, 0.45, 0.40, "bad", settings)
        assert report.status == "rolled_back" and "RevisionFailed" in report.reason
        isvc = fake.get(INFERENCE_SERVICES, NS, "maskrcnn")
        args = isvc["spec"]["predictor"]["containers"][0]["args"]
        assert args[args.index("--model-dir") + 1] == "s3://models/m1"
        assert isvc["metadata"]["annotations"][gate.ANNOTATION_MODEL_ID] == "m1"


def test_report_is_written_as_json_and_markdown(tmp_path):
    with FakeKubernetes() as fake:
        report = _deploy(fake, tmp_path, 0.20, 0.35, "m1")
    report.write(tmp_path / "deploy.json")
    data = json.loads((tmp_path / "deploy.json").read_text())
    assert data["status"] == "refused" and data["decision"]["checks"][0]["passed"] is False
    assert "| box AP >= threshold | 0.2000 | 0.3000 | no |" in (tmp_path / "deploy.md").read_text()


def test_deployment_manifest_validates_strictly_and_runs_as_non_root():
    kv = pytest.importorskip("kubernetes_validate")
    location = model_location("/data/runs/r1/model", pvc="coco", mount_path="/data")
    assert location.model_dir == "/models/runs/r1/model" and location.claim_name == "coco"
    manifest = build_deployment(SPEC, gate.ModelScore(0.4, 0.35, "m1", "s3://x"), location)
    kv.validate(manifest, "1.30", strict=True)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and not container["securityContext"]["allowPrivilegeEscalation"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"] and container["resources"]["requests"]


def test_inference_service_shape():
    manifest = build_inference_service(SPEC, gate.ModelScore(0.4, 0.35, "m1"), model_location("s3://b/m"))
    assert inference_service_problems(manifest) == []
    manifest["spec"]["predictor"]["containres"] = []
    assert "spec.predictor.containres: unknown field" in inference_service_problems(manifest)


@pytest.mark.parametrize("uri, pvc, message", [
    ("s3://", "", "no bucket"), ("/data/model", "", "pass --pvc"), ("/elsewhere/model", "coco", "not under"),
    ("pvc://coco", "", "pvc://<claim>/<path"), ("gs://b/m", "", "use s3://"),
])
def test_bad_model_uris_are_user_errors(uri, pvc, message):
    with pytest.raises(UserError, match=message):
        model_location(uri, pvc=pvc)


def test_prediction_contract_checks():
    good = {"annotations": [{"bbox": [0, 0, 4, 4], "score": 0.5, "category_id": 3, "category_name": "x",
                             "segmentation": {"counts": [2], "size": [48, 64]}}]}
    assert prediction_problems(good) == [] and prediction_problems({"annotations": []}) == []
    assert prediction_problems({"detections": []})
    bad = json.loads(json.dumps(good))
    bad["annotations"][0]["segmentation"]["size"] = [64, 48]
    bad["annotations"][0]["score"] = 3
    assert len(prediction_problems(bad)) == 2
    assert smoke_image()[:2] == b"\xff\xd8"


def test_update_leaves_replicas_to_the_autoscaler(tmp_path):
    with FakeKubernetes() as fake:
        assert _deploy(fake, tmp_path, 0.40, 0.35, "m1").status == "deployed"
        fake.update(DEPLOYMENTS, NS, "maskrcnn", lambda d: d["spec"].__setitem__("replicas", 5))  # the HPA scaled up
        assert _deploy(fake, tmp_path, 0.42, 0.36, "m2").status == "deployed"
        assert fake.get(DEPLOYMENTS, NS, "maskrcnn")["spec"]["replicas"] == 5


def test_update_keeps_what_an_overlay_set_on_the_pod_template(tmp_path):
    with FakeKubernetes() as fake:
        # The Deployment as `kubectl apply -k` created it: the project's template plus overlay settings.
        static = build_deployment(SPEC, gate.ModelScore(0.0, 0.0), model_location("pvc://data/model"))
        static["metadata"]["annotations"] = {}
        pod = static["spec"]["template"]["spec"]
        pod.update(serviceAccountName="maskrcnn-workload", nodeSelector={"pool": "cpu"})
        pod["containers"][0]["resources"] = {"requests": {"cpu": "7", "memory": "9Gi"},
                                             "limits": {"cpu": "7", "memory": "9Gi"}}
        fake.create(DEPLOYMENTS, NS, static, {})
        assert _deploy(fake, tmp_path, 0.40, 0.35, "m1").status == "deployed"
        pod = fake.get(DEPLOYMENTS, NS, "maskrcnn")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "maskrcnn-workload" and pod["nodeSelector"] == {"pool": "cpu"}
        assert pod["containers"][0]["resources"]["requests"]["cpu"] == "7"
        args = pod["containers"][0]["args"]
        assert args[args.index("--model-dir") + 1] == "s3://models/m1"
        assert "model" not in {v["name"] for v in pod["volumes"]}, "the s3 model needs no volume any more"
