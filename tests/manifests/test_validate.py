"""Every rendered object validates: core kinds with kubernetes-validate (strict: unknown fields are
errors), MPIJobs against mpi-operator's CRD with unknown fields rejected."""

from __future__ import annotations

import copy

import pytest
from kubernetes_validate import utils as kv

from maskrcnn.k8s.crd import MPIJobValidationError, validate_mpijob

from .render import KUSTOMIZATIONS, object_name, rendered

# The Kubernetes version the manifests target (kubernetes-validate ships its schemas): CronJob
# timeZone, the preStop `sleep` action and the `batch.kubernetes.io/job-name` label need >= 1.30.
K8S_VERSION = "1.31"
CUSTOM_KINDS = {"MPIJob"}


def validate_core(obj: dict) -> None:
    """Raise when ``obj`` breaks its schema; a kind without a schema is an error, not a skip."""
    kv.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_core_objects_validate_strictly(kustomization):
    problems = []
    for obj in rendered(kustomization):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            validate_core(obj)
        except kv.ValidationError as e:
            problems.append(f"{object_name(obj)}: {'.'.join(map(str, e.path))}: {e.message}")
        except kv.SchemaNotFoundError as e:
            problems.append(f"{object_name(obj)}: {e.message}")
    assert problems == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_mpijob_validates_against_the_crd(kustomization):
    mpijobs = [obj for obj in rendered(kustomization) if obj["kind"] == "MPIJob"]
    assert len(mpijobs) == 1
    validate_mpijob(mpijobs[0])


def test_strict_core_validation_rejects_an_unknown_field():
    deployment = next(o for o in rendered("base") if o["kind"] == "Deployment")
    validate_core(deployment)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["resource"] = typo["spec"]["template"]["spec"]["containers"][0].pop("resources")
    with pytest.raises(kv.ValidationError):
        validate_core(typo)


def test_crd_validation_rejects_an_unknown_field():
    mpijob = copy.deepcopy(next(o for o in rendered("base") if o["kind"] == "MPIJob"))
    mpijob["spec"]["slotPerWorker"] = mpijob["spec"].pop("slotsPerWorker")
    with pytest.raises(MPIJobValidationError, match="slotPerWorker"):
        validate_mpijob(mpijob)
