"""`maskrcnn k8s train|deploy` end to end: kubeconfig loading, exit codes, reports, SIGTERM in a real process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from maskrcnn.cli import main

from .fake_apiserver import DEPLOYMENTS, MPIJOBS, FakeKubernetes

NS = "ml"
REPO = Path(__file__).resolve().parents[2]


def _train_argv(kubeconfig, tmp_path, *extra):
    return ["k8s", "train", "--kubeconfig", str(kubeconfig), "--run-id", "cli-run", "--nodes", "2",
            "--gpus-per-node", "1", "--pvc", "coco", "--data", "/data/shards/train2017", "--model-dir", "/data/model",
            "--log-file", str(tmp_path / "launcher.log"), "--poll-interval", "1", *extra, "TRAIN.MAX_STEPS=5"]


def test_train_succeeds_in_the_kubeconfig_namespace(tmp_path, capsys):
    with FakeKubernetes(mpijob_scenarios=["succeed"]) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        assert main(_train_argv(kubeconfig, tmp_path)) == 0
        created = [p for m, p in fake.requests if m == "POST" and p.endswith("/mpijobs")]
        assert created == [f"/apis/kubeflow.org/v2beta1/namespaces/{NS}/mpijobs"]
        assert fake.list(MPIJOBS, NS) == []
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["attempts"] == 1 and summary["mpijob"].startswith("maskrcnn-cli-run-")
    assert "training finished" in (tmp_path / "launcher.log").read_text()


def test_train_failure_exits_non_zero_with_the_log_tail(tmp_path, capsys):
    with FakeKubernetes(mpijob_scenarios=["fail"]) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        assert main(_train_argv(kubeconfig, tmp_path)) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("error: MPIJob ml/maskrcnn-cli-run-") and "failed" in first
    assert "--- last" in err and err.rstrip().endswith("ValueError: loss is NaN")


def test_train_program_is_the_maskrcnn_train_command(tmp_path, capsys):
    argv = _train_argv(tmp_path / "unused", tmp_path, "--dry-run")
    assert main(argv) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    script = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"][2]
    mpirun = script.splitlines()[-1]
    assert mpirun.startswith("exec mpirun -np 2 ")
    assert mpirun.endswith("python3 -m maskrcnn.cli train --data /data/shards/train2017 --model-dir /data/model "
                           "--preset r50-fpn-1x TRAIN.MAX_STEPS=5")


@pytest.mark.parametrize("extra, message", [
    (["--toleration", "not-json"], "--toleration 'not-json' is not JSON"),
    (["--node-selector", "gpu"], "--node-selector 'gpu': use KEY=VALUE"),
    (["--command", "python x.py"], "either --command or --data"),
    (["--nodes", "0"], "--nodes 0: must be >= 1"),
])
def test_bad_train_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(_train_argv(tmp_path / "unused", tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_missing_kubeconfig_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(_train_argv(tmp_path / "absent-kubeconfig", tmp_path, "--namespace", NS)) == 2
    assert "cannot load the Kubernetes configuration" in capsys.readouterr().err


def test_sigterm_to_the_runner_process_deletes_the_mpijob(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["hang"]) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        process = subprocess.Popen([sys.executable, "-m", "maskrcnn.cli", *_train_argv(kubeconfig, tmp_path)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not fake.logs and time.monotonic() < deadline:  # the job is running
                time.sleep(0.05)
            assert fake.list(MPIJOBS, NS), "the MPIJob should exist before SIGTERM"
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 143, err
        assert "terminated: MPIJob ml/maskrcnn-cli-run-" in err
        assert fake.list(MPIJOBS, NS) == []


def _deploy_argv(kubeconfig, tmp_path, box, mask, model_id):
    metrics = tmp_path / f"{model_id}.json"
    metrics.write_text(json.dumps({"bbox": {"AP": box}, "segm": {"AP": mask}, "model_id": model_id}))
    return ["k8s", "deploy", "--kubeconfig", str(kubeconfig), "--namespace", "serving", "--metrics", str(metrics),
            "--model-uri", f"pvc://models/{model_id}", "--min-box-ap", "0.3", "--min-mask-ap", "0.3",
            "--poll-interval", "0.05", "--rollout-timeout", "10", "--report", str(tmp_path / f"{model_id}-report.json")]


def test_deploy_command_deploys_refuses_and_rolls_back(tmp_path, capsys):
    with FakeKubernetes(smoke_fails=lambda d: "m3" in json.dumps(d["spec"]["template"])) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        assert main(_deploy_argv(kubeconfig, tmp_path, 0.40, 0.35, "m1")) == 0
        volumes = fake.get(DEPLOYMENTS, "serving", "maskrcnn")["spec"]["template"]["spec"]["volumes"]
        assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in volumes
        assert main(_deploy_argv(kubeconfig, tmp_path, 0.10, 0.35, "m2")) == 0   # refused: exit 0
        assert main(_deploy_argv(kubeconfig, tmp_path, 0.50, 0.45, "m3")) == 1   # smoke fails: rolled back
    out = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [o["status"] for o in out] == ["deployed", "refused", "rolled_back"]
    assert json.loads((tmp_path / "m2-report.json").read_text())["status"] == "refused"
    assert "# Deploy: rolled_back" in (tmp_path / "m3-report.md").read_text()
