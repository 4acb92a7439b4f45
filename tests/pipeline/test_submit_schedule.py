"""`maskrcnn pipeline submit|schedule` against a stand-in of the KFP v2beta1 API over real HTTP."""

import socket

import pytest
import yaml

from maskrcnn.cli import main
from .kfp_standin import KfpStandIn


@pytest.fixture
def kfp_api():
    with KfpStandIn() as standin:
        yield standin


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_uploads_the_package_and_starts_a_run(kfp_api, capsys):
    code, out, err = _run(capsys, "pipeline", "submit", "--host", kfp_api.url, "nodes=4", "max_steps=100",
                          "source=s3://bucket/coco", 'gpu_node_selector={"gpu": "a100"}')
    assert code == 0, err
    (pipeline,) = kfp_api.pipelines.values()
    assert pipeline["display_name"] == "maskrcnn-coco"
    uploaded = next(yaml.safe_load_all(next(iter(kfp_api.versions.values()))["package"]))
    assert uploaded["pipelineInfo"]["name"] == "maskrcnn-coco"
    (run,) = kfp_api.runs
    assert run["runtime_config"]["parameters"] == {
        "nodes": 4, "max_steps": 100, "source": "s3://bucket/coco", "gpu_node_selector": {"gpu": "a100"}}
    reference = run["pipeline_version_reference"]
    assert reference["pipeline_id"] == pipeline["pipeline_id"]
    assert kfp_api.versions[reference["pipeline_version_id"]]["display_name"].startswith("maskrcnn-coco-")
    assert run["run_id"] in out


def test_resubmitting_the_same_package_reuses_its_version(kfp_api, capsys):
    assert _run(capsys, "pipeline", "submit", "--host", kfp_api.url)[0] == 0
    versions = len(kfp_api.versions)
    assert _run(capsys, "pipeline", "submit", "--host", kfp_api.url, "--run-name", "second",
                "--service-account", "maskrcnn-runner")[0] == 0
    assert len(kfp_api.versions) == versions
    assert len(kfp_api.runs) == 2 and kfp_api.runs[1]["display_name"] == "second"
    assert kfp_api.runs[1]["service_account"] == "maskrcnn-runner" and "service_account" not in kfp_api.runs[0]
    assert kfp_api.runs[0]["pipeline_version_reference"] == kfp_api.runs[1]["pipeline_version_reference"]
    assert len(kfp_api.experiments) == 1


def test_schedule_creates_a_recurring_run(kfp_api, capsys):
    code, out, err = _run(capsys, "pipeline", "schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * 0", "epochs=6")
    assert code == 0, err
    (recurring,) = kfp_api.recurring_runs
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
    assert recurring["max_concurrency"] == "1" or recurring["max_concurrency"] == 1
    assert recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE"
    assert recurring["runtime_config"]["parameters"] == {"epochs": 6.0}
    assert recurring["recurring_run_id"] in out
    assert not kfp_api.runs


def test_five_field_cron_is_rejected_with_the_six_field_form(kfp_api, capsys):
    code, out, err = _run(capsys, "pipeline", "schedule", "--host", kfp_api.url, "--cron", "0 3 * * 0")
    assert code == 2
    assert err.count("\n") == 1 and '"0 0 3 * * 0"' in err
    assert kfp_api.requests == []  # rejected before any request


def test_unreachable_host_is_one_clear_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    for command in (["submit"], ["schedule", "--cron", "0 0 3 * * 0"]):
        code, out, err = _run(capsys, "pipeline", *command, "--host", f"http://127.0.0.1:{port}")
        assert code == 2
        assert err.startswith("error: cannot reach Kubeflow Pipelines at") and err.count("\n") == 1


def test_a_rejected_request_is_one_clear_line(kfp_api, capsys):
    kfp_api.reject["runs"] = (403, "user is not allowed to create runs in namespace kubeflow")
    code, out, err = _run(capsys, "pipeline", "submit", "--host", kfp_api.url)
    assert code == 2
    assert err.count("\n") == 1
    assert "rejected the run creation: HTTP 403" in err and "not allowed" in err
    assert not kfp_api.runs


def test_unknown_or_mistyped_parameters_are_rejected_before_upload(kfp_api, capsys):
    code, _, err = _run(capsys, "pipeline", "submit", "--host", kfp_api.url, "gpus=8")
    assert code == 2 and "unknown pipeline parameter 'gpus'" in err and "gpus_per_node" in err
    code, _, err = _run(capsys, "pipeline", "submit", "--host", kfp_api.url, "nodes=two")
    assert code == 2 and "nodes='two'" in err
    assert not kfp_api.pipelines
