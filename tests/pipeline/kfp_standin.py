"""A local stand-in of the Kubeflow Pipelines v2beta1 REST API (real HTTP on 127.0.0.1).

It implements the endpoints kfp.Client 2.13 calls to upload a pipeline (and versions), find or
create an experiment, create a run and a recurring run, and healthz; it records every request body
so tests can check what a real server would have received. ``reject`` makes chosen endpoints answer
with an error status, as a server refusing a request does.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

API = "/apis/v2beta1"


class KfpStandIn:
    def __init__(self) -> None:
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}       # version id -> version (with the uploaded package text)
        self.experiments: dict[str, dict] = {}
        self.runs: list[dict] = []
        self.recurring_runs: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.reject: dict[str, tuple[int, str]] = {}  # endpoint key ("upload", "runs", ...) -> (status, message)
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "KfpStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    # ------------------------------------------------------------------ request handling

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                standin.requests.append((method, parsed.path))
                route = standin.route(method, parsed.path)
                if route is None:
                    self._send(404, {"error": f"no route {method} {parsed.path}", "code": 5})
                    return
                key, handler, args = route
                if key in standin.reject:
                    status, message = standin.reject[key]
                    self._send(status, {"error": message, "message": message, "code": 7})
                    return
                status, body = handler(query=query, body=self._body(), headers=self.headers, *args)
                self._send(status, body)

        return Handler

    def route(self, method: str, path: str):
        if not path.startswith(API):
            return None
        rest = path[len(API):]
        table = {
            ("GET", "/healthz"): ("healthz", self.healthz),
            ("GET", "/pipelines"): ("pipelines", self.list_pipelines),
            ("POST", "/pipelines/upload"): ("upload", self.upload),
            ("POST", "/pipelines/upload_version"): ("upload_version", self.upload_version),
            ("GET", "/experiments"): ("experiments", self.list_experiments),
            ("POST", "/experiments"): ("create_experiment", self.create_experiment),
            ("POST", "/runs"): ("runs", self.create_run),
            ("POST", "/recurringruns"): ("recurringruns", self.create_recurring_run),
        }
        if (method, rest) in table:
            key, handler = table[(method, rest)]
            return key, handler, ()
        parts = rest.strip("/").split("/")
        if method == "GET" and len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "versions":
            return "versions", self.list_versions, (parts[1],)
        return None

    @staticmethod
    def _name_filter(query: dict) -> str | None:
        if "filter" not in query:
            return None
        predicates = json.loads(query["filter"]).get("predicates", [])
        return next((p.get("stringValue", p.get("string_value")) for p in predicates if p.get("key") in ("display_name", "name")), None)

    @staticmethod
    def _package(body: bytes, headers) -> str:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body
        )
        part = next(p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "uploadfile")
        text = part.get_payload(decode=True).decode()
        list(yaml.safe_load_all(text))  # a real server rejects a package that is not YAML
        return text

    # ------------------------------------------------------------------ endpoints

    def healthz(self, **_: Any):
        return 200, {"multi_user": False}

    def list_pipelines(self, query: dict, **_: Any):
        name = self._name_filter(query)
        items = [p for p in self.pipelines.values() if name is None or p["display_name"] == name]
        return 200, {"pipelines": items, "total_size": len(items)} if items else {}

    def _add_version(self, pipeline_id: str, name: str, package: str) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": self.new_id("version"), "display_name": name,
                   "created_at": "2026-01-01T00:00:00Z"}
        self.versions[version["pipeline_version_id"]] = {**version, "package": package}
        return version

    def upload(self, query: dict, body: bytes, headers, **_: Any):
        name = query.get("name")
        if any(p["display_name"] == name for p in self.pipelines.values()):
            return 409, {"error": f"pipeline {name} already exists", "message": f"pipeline {name} already exists", "code": 6}
        pipeline = {"pipeline_id": self.new_id("pipeline"), "display_name": name,
                    "description": query.get("description", ""), "created_at": "2026-01-01T00:00:00Z"}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self._add_version(pipeline["pipeline_id"], name, self._package(body, headers))
        return 200, pipeline

    def upload_version(self, query: dict, body: bytes, headers, **_: Any):
        if query.get("pipelineid") not in self.pipelines:
            return 404, {"error": "pipeline not found", "message": "pipeline not found", "code": 5}
        return 200, self._add_version(query["pipelineid"], query["name"], self._package(body, headers))

    def list_versions(self, pipeline_id: str, query: dict, **_: Any):
        name = self._name_filter(query)
        items = [{k: v for k, v in version.items() if k != "package"} for version in self.versions.values()
                 if version["pipeline_id"] == pipeline_id and (name is None or version["display_name"] == name)]
        return 200, {"pipeline_versions": items, "total_size": len(items)} if items else {}

    def list_experiments(self, query: dict, **_: Any):
        name = self._name_filter(query)
        items = [e for e in self.experiments.values() if name is None or e["display_name"] == name]
        return 200, {"experiments": items, "total_size": len(items)} if items else {}

    def create_experiment(self, body: bytes, **_: Any):
        request = json.loads(body)
        experiment = {"experiment_id": self.new_id("experiment"), "display_name": request["display_name"],
                      "namespace": request.get("namespace") or ""}
        self.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment

    def _check_reference(self, request: dict) -> tuple[int, dict] | None:
        if request.get("experiment_id") not in self.experiments:
            return 400, {"error": "unknown experiment", "message": "unknown experiment", "code": 3}
        reference = request.get("pipeline_version_reference") or {}
        if reference.get("pipeline_version_id") not in self.versions:
            return 400, {"error": "unknown pipeline version", "message": "unknown pipeline version", "code": 3}
        spec = next(yaml.safe_load_all(self.versions[reference["pipeline_version_id"]]["package"]))
        known = spec["root"]["inputDefinitions"]["parameters"]
        unknown = set(request.get("runtime_config", {}).get("parameters", {})) - set(known)
        if unknown:
            message = f"unknown pipeline parameters {sorted(unknown)}"
            return 400, {"error": message, "message": message, "code": 3}
        return None

    def create_run(self, body: bytes, **_: Any):
        request = json.loads(body)
        problem = self._check_reference(request)
        if problem:
            return problem
        run = {**request, "run_id": self.new_id("run"), "state": "PENDING"}
        self.runs.append(run)
        return 200, run

    def create_recurring_run(self, body: bytes, **_: Any):
        request = json.loads(body)
        problem = self._check_reference(request)
        if problem:
            return problem
        recurring = {**request, "recurring_run_id": self.new_id("recurring"), "status": "ENABLED"}
        self.recurring_runs.append(recurring)
        return 200, recurring
