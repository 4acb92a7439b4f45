"""Submit and schedule the compiled pipeline on a Kubeflow Pipelines v2 API server (kfp.Client).

Both upload the package as a pipeline version named by its content hash (a re-submit of the same
package reuses it), then create a run or a recurring run of that version. Every way the server can
fail — unreachable, not a KFP API, rejecting a request — becomes one ``UserError`` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from maskrcnn.errors import UserError

log = logging.getLogger(__name__)

PIPELINE_NAME = "maskrcnn-coco"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


def check_cron(expression: str) -> str:
    """Return a 6-field KFP cron expression (seconds first) or raise UserError showing the right form."""
    fields = expression.split()
    if len(fields) == 5:
        raise UserError(
            f'cron "{expression}" has 5 fields, but KFP cron has 6 with seconds first; '
            f'for the same times write "0 {expression}"'
        )
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise UserError(
            f'cron "{expression}": expected 6 fields "second minute hour day-of-month month day-of-week", '
            f'e.g. "0 0 3 * * 0" (Sundays at 03:00)'
        )
    return " ".join(fields)


def pipeline_inputs(package: Path) -> dict[str, str]:
    """``{parameter name: KFP parameter type}`` of a compiled package (its first YAML document)."""
    import yaml

    with open(package) as f:
        spec = next(yaml.safe_load_all(f))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    return {name: p["parameterType"] for name, p in parameters.items()}


def parse_params(items: Sequence[str], inputs: Mapping[str, str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings typed by the pipeline's parameter types; unknown names are errors."""
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"pipeline parameter {item!r}: expected NAME=VALUE, e.g. nodes=4")
        name, text = item.split("=", 1)
        if name not in inputs:
            raise UserError(f"unknown pipeline parameter {name!r}; the pipeline takes: {', '.join(sorted(inputs))}")
        params[name] = _typed(name, text, inputs[name])
    return params


def _typed(name: str, text: str, kind: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if kind in ("LIST", "STRUCT"):
            value = json.loads(text)
            if not isinstance(value, list if kind == "LIST" else dict):
                raise ValueError(text)
            return value
    except ValueError:
        example = {"LIST": '["A=1"]', "STRUCT": '{"key": "value"}'}.get(kind, "")
        raise UserError(f"pipeline parameter {name}={text!r}: expected {kind.lower().replace('_', ' ')} {example}".rstrip()) from None
    return text


@contextlib.contextmanager
def api_errors(host: str, action: str) -> Iterator[None]:
    """Turn the KFP client's exceptions into a one-line UserError naming the host and the action."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as e:
        raise UserError(f"Kubeflow Pipelines at {host} rejected the {action}: HTTP {e.status} {_server_message(e)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise UserError(f"lost the connection to Kubeflow Pipelines at {host} during the {action}: {e}") from None
    except ValueError as e:  # the client's own checks (e.g. duplicate pipeline names)
        raise UserError(f"{action} on {host}: {e}") from None


def _server_message(error: Any) -> str:
    try:
        body = json.loads(error.body or "{}")
        message = body.get("message") or body.get("error") or ""
    except (TypeError, ValueError):
        message = str(error.body or "")
    return " ".join((error.reason or "", str(message))).strip()[:300]


def _network_reason(error: Exception) -> str:
    """The useful part of a requests/urllib3 error: "[Errno 111] Connection refused", "timed out", ..."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if found:
        return found.group(0).strip()
    return "timed out" if "timed out" in text.lower() else type(error).__name__


def check_reachable(host: str, timeout: float = 10.0) -> None:
    """``GET {host}/apis/v2beta1/healthz`` must answer JSON, else a UserError says what is wrong."""
    import requests

    url = f"{host.rstrip('/')}/apis/v2beta1/healthz"
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as e:
        raise UserError(
            f"cannot reach Kubeflow Pipelines at {host} ({_network_reason(e)}); check --host, e.g. after "
            f"`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` use --host http://127.0.0.1:8080"
        ) from None
    if response.status_code != 200:
        raise UserError(f"{host} answered HTTP {response.status_code} on /apis/v2beta1/healthz: not a reachable KFP v2 API")
    try:
        response.json()
    except ValueError:
        raise UserError(f"{host} answered /apis/v2beta1/healthz with a non-JSON page (a login page?); "
                        f"pass the KFP API address or authenticate first") from None


def connect(host: str, namespace: str | None = None):
    """A kfp.Client for ``host`` after checking that the API answers."""
    check_reachable(host)
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        with api_errors(host, "connection"):
            return kfp.Client(host=host, namespace=namespace or "kubeflow")


@dataclass(frozen=True)
class PipelineVersion:
    pipeline_id: str
    version_id: str
    version_name: str


def _by_name(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def upload(client, host: str, package: Path, name: str = PIPELINE_NAME) -> PipelineVersion:
    """Upload ``package`` as a version of pipeline ``name`` named by its content hash (reused if present)."""
    version_name = f"{name}-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"
    with api_errors(host, "pipeline upload"):
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(str(package), pipeline_name=name,
                                              description="Mask R-CNN on COCO: download, convert, train, evaluate, deploy")
            pipeline_id = pipeline.pipeline_id
        versions = client.list_pipeline_versions(pipeline_id, filter=_by_name(version_name)).pipeline_versions or []
        if versions:
            log.info("pipeline version %s is already uploaded", version_name)
            return PipelineVersion(pipeline_id, versions[0].pipeline_version_id, version_name)
        version = client.upload_pipeline_version(str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id)
    return PipelineVersion(pipeline_id, version.pipeline_version_id, version_name)


def submit(*, host: str, package: Path, params: Mapping[str, Any], experiment: str, run_name: str,
           namespace: str | None = None, service_account: str | None = None) -> dict[str, str]:
    """Upload the package and start one run; returns ids and the run's UI link."""
    client = connect(host, namespace)
    version = upload(client, host, package)
    with api_errors(host, "run creation"):
        experiment_id = client.create_experiment(name=experiment, namespace=namespace).experiment_id
        run = client.run_pipeline(experiment_id=experiment_id, job_name=run_name, params=dict(params),
                                  pipeline_id=version.pipeline_id, version_id=version.version_id,
                                  service_account=service_account)
    return {"run_id": run.run_id, "pipeline_id": version.pipeline_id, "version": version.version_name,
            "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}"}


def schedule(*, host: str, package: Path, params: Mapping[str, Any], experiment: str, name: str, cron: str,
             max_concurrency: int = 1, catchup: bool = False, namespace: str | None = None,
             service_account: str | None = None) -> dict[str, str]:
    """Upload the package and create a recurring run on a 6-field cron schedule (one at a time, no catch-up by default)."""
    cron = check_cron(cron)
    if max_concurrency < 1:
        raise UserError(f"--max-concurrency {max_concurrency}: must be at least 1")
    client = connect(host, namespace)
    version = upload(client, host, package)
    with api_errors(host, "recurring run creation"):
        experiment_id = client.create_experiment(name=experiment, namespace=namespace).experiment_id
        recurring = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=max_concurrency,
            no_catchup=not catchup, params=dict(params), pipeline_id=version.pipeline_id,
            version_id=version.version_id, enabled=True, service_account=service_account,
        )
    return {"recurring_run_id": recurring.recurring_run_id, "pipeline_id": version.pipeline_id,
            "version": version.version_name, "cron": cron,
            "url": f"{host.rstrip('/')}/#/recurringrun/details/{recurring.recurring_run_id}"}
