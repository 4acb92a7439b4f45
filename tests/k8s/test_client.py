"""Loading the cluster configuration and turning API failures into one-line user errors."""

import json

import pytest
from kubernetes.client.exceptions import ApiException

from maskrcnn.errors import UserError
from maskrcnn.k8s.client import api_error, default_namespace, load_api_client

from .fake_apiserver import FakeKubernetes


def _api_exception(status, message):
    e = ApiException(status=status, reason="Reason")
    e.body = json.dumps({"kind": "Status", "message": message})
    return e


def test_in_cluster_without_a_token_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(UserError, match="in-cluster Kubernetes configuration is incomplete"):
        load_api_client()


def test_kubeconfig_is_loaded_with_its_namespace(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetes() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "config", namespace="team-a")
        api = load_api_client(kubeconfig=str(kubeconfig))
        assert api.configuration.host == fake.url
        assert default_namespace(kubeconfig=str(kubeconfig)) == "team-a"
    assert default_namespace(kubeconfig=str(tmp_path / "absent")) == "default"


@pytest.mark.parametrize("status, what, needle", [
    (403, "create MPIJob ml/x", "grant the service account"),
    (404, "create MPIJob ml/x", "is mpi-operator v0.8.2"),
    (401, "read Deployment", "refresh the kubeconfig credentials"),
    (500, "read Deployment", "HTTP 500"),
])
def test_api_errors_say_what_to_do(status, what, needle):
    error = api_error(_api_exception(status, "the server says no"), what)
    assert needle in str(error) and "the server says no" in str(error) and "\n" not in str(error)


def test_connection_errors_are_told_apart_from_bad_answers():
    assert "cannot reach the Kubernetes API server" in str(api_error(ConnectionRefusedError("refused"), "list"))
    assert "unexpected answer" in str(api_error(ValueError("bad field"), "list"))
