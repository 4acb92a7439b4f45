"""The fake API server behaves like a real one with the real CRD: what the schema rejects, it rejects."""

import copy
import json

import jsonschema
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from maskrcnn.k8s import crd
from maskrcnn.k8s.mpijob import DataVolume, build_mpijob

from .fake_apiserver import MPIJOBS, FakeKubernetes

NS = "ml"


def _job():
    return build_mpijob(name="job", namespace=NS, nodes=2, gpus_per_node=8, command="true", data=DataVolume("coco"))


def _create(fake, body, strict=True):
    api = client.CustomObjectsApi(fake.api_client())
    kwargs = {"field_validation": "Strict"} if strict else {}
    return api.create_namespaced_custom_object(crd.GROUP, crd.VERSION, NS, crd.PLURAL, body, **kwargs)


MUTATIONS = {
    "enum": lambda j: j["spec"].__setitem__("mpiImplementation", "LAM"),
    "type": lambda j: j["spec"].__setitem__("slotsPerWorker", "eight"),
    "quantity": lambda j: j["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["resources"]
    ["limits"].__setitem__("memory", "lots"),
    "required": lambda j: j["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].pop("name"),
    "unknown": lambda j: j["spec"].__setitem__("slotPerWorker", 8),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_strict_copy_rejects_exactly_what_the_crd_rejects_plus_unknown_fields(mutation):
    job = _job()
    MUTATIONS[mutation](job)
    raw = jsonschema.Draft7Validator(crd.crd_schema(crd.load_crd()))
    raw_errors = {".".join(map(str, e.absolute_path)) for e in raw.iter_errors(job)}
    strict = crd.schema_violations(job)
    if mutation == "unknown":
        assert raw_errors == set() and strict == ["spec.slotPerWorker: unknown field"]
    else:
        assert raw_errors, "the real CRD schema rejects this"
        assert strict and not any(v.endswith("unknown field") for v in strict)


def test_fake_accepts_the_builder_output():
    with FakeKubernetes(default_scenario="pending") as fake:
        created = _create(fake, _job())
        assert created["metadata"]["uid"] and created["spec"]["slotsPerWorker"] == 8


def test_fake_answers_422_with_causes_for_schema_violations():
    job = _job()
    MUTATIONS["enum"](job)
    with FakeKubernetes(default_scenario="pending") as fake:
        with pytest.raises(ApiException) as info:
            _create(fake, job)
        assert fake.list(MPIJOBS, NS) == []
    assert info.value.status == 422
    body = json.loads(info.value.body)
    assert body["reason"] == "Invalid" and body["details"]["causes"][0]["field"] == "spec.mpiImplementation"


def test_fake_rejects_unknown_fields_when_strict_and_prunes_them_otherwise():
    job = _job()
    MUTATIONS["unknown"](job)
    with FakeKubernetes(default_scenario="pending") as fake:
        with pytest.raises(ApiException) as info:
            _create(fake, job)
        assert info.value.status == 400 and 'unknown field \\"spec.slotPerWorker\\"' in info.value.body
        created = _create(fake, copy.deepcopy(job), strict=False)
        assert "slotPerWorker" not in created["spec"], "a real API server prunes unknown fields"


def test_fake_refuses_duplicates_like_the_api_server():
    with FakeKubernetes(default_scenario="pending") as fake:
        _create(fake, _job())
        with pytest.raises(ApiException) as info:
            _create(fake, _job())
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "AlreadyExists"
