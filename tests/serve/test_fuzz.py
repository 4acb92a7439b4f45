"""Fuzz every operation from the OpenAPI schema (in-process ASGI): the server never answers 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode


@pytest.fixture(scope="module")
def api_schema(standin_model_dir):
    from schemathesis.python import asgi

    from maskrcnn.serve.app import create_app

    from .conftest import wait_ready

    app = create_app(standin_model_dir)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with asgi.get_client(app) as client:   # the lifespan (model load) stays up for the fuzzing
        wait_ready(client)
    return schema


# schemathesis' pytest loader (from_fixture) does not run under pytest 9, so each operation's
# hypothesis strategy is driven directly.
def test_no_server_errors(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 7          # 3 predict paths, ping, readyz, healthz, metrics
    statuses = set()
    # Negative cases need something to break: only the POST operations have a body.
    runs = [(op, mode) for op in operations for mode in GenerationMode if op.method == "post" or mode == GenerationMode.POSITIVE]
    for operation, mode in runs:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            statuses.add(case.call_and_validate(checks=[not_a_server_error]).status_code)

        fuzz()
    assert {200, 400, 422} <= statuses     # schema-valid and schema-violating requests were both sent
