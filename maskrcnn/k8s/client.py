"""Connect to the Kubernetes API server: in-cluster service account or a kubeconfig, with clear errors.

Every call site turns ``ApiException`` into a message through ``api_error``, so a missing CRD, a
missing RBAC rule or an unreachable server reads as what to do, not as a stack trace.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from maskrcnn.errors import UserError

logger = logging.getLogger(__name__)

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def load_api_client(*, kubeconfig: str | None = None, context: str | None = None):
    """An ``ApiClient``: the pod's service account when running in a cluster (and no kubeconfig was
    given), else the kubeconfig (``--kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
            logger.info("using the in-cluster service account")
            return client.ApiClient(configuration)
        except config.ConfigException as e:
            raise UserError(f"in-cluster Kubernetes configuration is incomplete ({e}): mount the service account "
                            "token or pass --kubeconfig") from None
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (config.ConfigException, FileNotFoundError, OSError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise UserError(f"cannot load the Kubernetes configuration from {where} ({e}): run inside the cluster, "
                        "set KUBECONFIG or pass --kubeconfig (and --context)") from None
    logger.info("using kubeconfig %s (server %s)", kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config"),
                configuration.host)
    return client.ApiClient(configuration)


def default_namespace(*, kubeconfig: str | None = None, context: str | None = None) -> str:
    """The pod's own namespace in a cluster, else the kubeconfig context's namespace, else ``default``."""
    if kubeconfig is None and IN_CLUSTER_NAMESPACE_FILE.is_file():
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c["name"] == context), active)
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig: load_api_client reports that clearly
        return "default"


def api_error(e: Exception, what: str) -> UserError:
    """A one-line ``UserError`` for a failed API call ``what`` (e.g. "create MPIJob ml/job")."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        detail = _status_message(e)
        if e.status == 401:
            return UserError(f"{what}: unauthorized ({detail}): refresh the kubeconfig credentials")
        if e.status == 403:
            return UserError(f"{what}: forbidden ({detail}): grant the service account this permission "
                             "(see manifests/base RBAC)")
        if e.status == 404 and "mpijob" in what.lower():
            return UserError(f"{what}: not found ({detail}): is mpi-operator v0.8.2 (the kubeflow.org/v2beta1 "
                             "MPIJob CRD) installed in the cluster?")
        return UserError(f"{what}: HTTP {e.status} {e.reason} ({detail})")
    import urllib3

    if not isinstance(e, (OSError, urllib3.exceptions.HTTPError)):
        return UserError(f"{what}: unexpected answer from the API server ({type(e).__name__}: {e})")
    return UserError(f"{what}: cannot reach the Kubernetes API server ({type(e).__name__}: {e}): check the "
                     "kubeconfig's server address and the network")


def _status_message(e) -> str:
    import json

    try:
        return json.loads(e.body).get("message", "") or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.body or e.reason)[:300]
