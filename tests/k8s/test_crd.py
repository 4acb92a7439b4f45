"""The strict CRD validator: it accepts what mpi-operator v0.8.2 accepts and names every problem."""

import copy
import filecmp

import pytest

from maskrcnn.k8s import crd


def _minimal():
    return {
        "apiVersion": "kubeflow.org/v2beta1",
        "kind": "MPIJob",
        "metadata": {"name": "job", "labels": {"a": "b"}},
        "spec": {
            "slotsPerWorker": 1,
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {
                    "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}},
                "Worker": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            },
        },
    }


def test_vendored_crd_equals_shared_copy():
    if not crd.SHARED_CRD.is_file():
        pytest.skip("../shared/schemas is not checked out beside the repository")
    assert filecmp.cmp(crd.VENDORED_CRD, crd.SHARED_CRD, shallow=False)


def test_minimal_manifest_is_valid():
    crd.validate_mpijob(_minimal())


def test_strict_schema_forbids_unknown_properties_only_where_listed():
    schema = crd.strict_schema(crd.crd_schema(crd.load_crd()))
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    # A map (additionalProperties is a schema) stays a map.
    assert isinstance(spec["properties"]["mpiReplicaSpecs"]["additionalProperties"], dict)
    original = crd.crd_schema(crd.load_crd())
    assert "additionalProperties" not in original["properties"]["spec"], "the CRD itself must stay untouched"


@pytest.mark.parametrize("path, key", [
    (("spec",), "slotPerWorker"),                                   # typo of slotsPerWorker
    (("metadata",), "lables"),
    (("spec", "mpiReplicaSpecs", "Worker"), "replica"),
    (("spec", "mpiReplicaSpecs", "Launcher", "template", "spec", "containers", 0), "imagePullPolice"),
    (("spec", "mpiReplicaSpecs", "Launcher", "template", "metadata"), "annotation"),
])
def test_unknown_field_is_rejected_with_its_path(path, key):
    manifest = _minimal()
    node = manifest
    for part in path:
        node = node[part]
    node[key] = "x"
    with pytest.raises(crd.MPIJobValidationError) as info:
        crd.validate_mpijob(manifest)
    dotted = ".".join(str(p) for p in path).replace(".0", "[0]")
    assert f"{dotted}.{key}: unknown field" in info.value.violations


def test_every_violation_is_listed_in_one_error():
    manifest = _minimal()
    manifest["spec"]["mpiImplementation"] = "LAM"
    manifest["spec"]["slotsPerWorker"] = "eight"
    manifest["spec"]["runPolicy"] = {"cleanPodPolicy": "Sometimes", "backoffLimit": -1}
    manifest["spec"]["mpiReplicaSpecs"]["Launcher"]["replicas"] = 2
    manifest["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": "eight"}}
    with pytest.raises(crd.MPIJobValidationError) as info:
        crd.validate_mpijob(manifest)
    text = "\n".join(info.value.violations)
    assert "spec.mpiImplementation: Unsupported value 'LAM'" in text
    assert "spec.slotsPerWorker" in text
    assert "spec.runPolicy.cleanPodPolicy: Unsupported value 'Sometimes'" in text
    assert "spec.runPolicy.backoffLimit: must be greater than or equal to 0" in text
    assert "spec.mpiReplicaSpecs.Launcher.replicas: must be 1" in text
    assert "limits.nvidia.com/gpu" in text
    assert "\n" not in str(info.value), "the error is one line"


def test_name_must_leave_room_for_worker_host_names():
    manifest = _minimal()
    manifest["metadata"]["name"] = "a" * 55  # a-...-worker-1 is 64 characters
    with pytest.raises(crd.MPIJobValidationError, match="exceeds 63"):
        crd.validate_mpijob(manifest)
    manifest["metadata"]["name"] = "Job_1"
    with pytest.raises(crd.MPIJobValidationError, match="DNS-1035"):
        crd.validate_mpijob(manifest)


def test_missing_launcher_and_containers_are_reported():
    manifest = _minimal()
    del manifest["spec"]["mpiReplicaSpecs"]["Launcher"]
    manifest["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"] = []
    with pytest.raises(crd.MPIJobValidationError) as info:
        crd.validate_mpijob(manifest)
    assert "spec.mpiReplicaSpecs.Launcher: Required value" in info.value.violations
    assert any("Worker.template.spec.containers: Required value" in v for v in info.value.violations)


def test_pod_templates_get_a_second_strict_opinion_from_kubernetes_validate():
    pytest.importorskip("kubernetes_validate")
    manifest = _minimal()
    manifest["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["bogus"] = 1
    problems = crd.pod_template_violations(manifest)
    assert len(problems) == 1 and "Worker.template.spec.containers[0]" in problems[0]
    assert crd.pod_template_violations(_minimal()) == []


def test_schema_violations_do_not_modify_the_manifest():
    manifest = _minimal()
    before = copy.deepcopy(manifest)
    crd.schema_violations(manifest)
    assert manifest == before


def test_controller_rules_beyond_the_schema():
    manifest = _minimal()
    manifest["spec"]["mpiReplicaSpecs"]["Worker"]["restartPolicy"] = "Always"  # schema: any string
    manifest["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] = 0
    manifest["metadata"]["labels"]["pipelines.kubeflow.org/run-id"] = "x" * 64
    with pytest.raises(crd.MPIJobValidationError) as info:
        crd.validate_mpijob(manifest)
    text = "\n".join(info.value.violations)
    assert "Worker.restartPolicy: Unsupported value 'Always'" in text
    assert "Worker.replicas: must be greater than or equal to 1" in text
    assert "invalid label value" in text


def test_the_vendored_crd_is_used_when_the_shared_copy_is_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(crd, "SHARED_CRD", tmp_path / "absent.yaml")
    assert crd.crd_path() == crd.VENDORED_CRD
    manifest = _minimal()
    manifest["spec"]["slotPerWorker"] = 1
    assert crd.schema_violations(manifest) == ["spec.slotPerWorker: unknown field"]
