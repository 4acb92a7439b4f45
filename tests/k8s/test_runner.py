"""The MPIJob runner against the fake API server: the real kubernetes client over real HTTP."""

import os
import signal
import threading
import time

import pytest

from maskrcnn.k8s.mpijob import LABEL_RUN_ID, DataVolume, MPIJobOptions, build_mpijob
from maskrcnn.k8s.runner import (
    MPIJobRunner, RunnerSettings, Terminated, TrainingFailed, TrainingTimedOut, SigtermGuard, job_base_name,
    preemption_evidence,
)

from .fake_apiserver import MPIJOBS, PODS, FakeKubernetes

NS = "ml"
RUN_ID = "run-7f3a"


def _build(name, attempt):
    return build_mpijob(name=name, namespace=NS, nodes=2, gpus_per_node=8, command="python -m maskrcnn.cli train",
                        data=DataVolume("coco"), options=MPIJobOptions(run_id=RUN_ID, attempt=attempt))


def _settings(tmp_path, **overrides):
    return RunnerSettings(**{"poll_seconds": 1, "max_resubmits": 2, "log_file": tmp_path / "launcher.log",
                             **overrides})


def _run(fake, tmp_path, guard=None, **settings):
    runner = MPIJobRunner(fake.api_client(), NS, _settings(tmp_path, **settings), guard=guard)
    return runner.run(base_name=job_base_name(RUN_ID), run_id=RUN_ID, build=_build)


def _mpijob_creates(fake):
    return [p for m, p in fake.requests if m == "POST" and p.endswith("/mpijobs")]


def test_success_streams_the_launcher_log_and_deletes_the_job(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["succeed"]) as fake:
        result = _run(fake, tmp_path)
        assert result.name == job_base_name(RUN_ID) and result.attempts == 1 and not result.adopted
        assert fake.list(MPIJOBS, NS) == [] and (MPIJOBS, NS, result.name) in fake.deleted
        assert fake.list(PODS, NS) == [], "pods go with the job"
    log = (tmp_path / "launcher.log").read_text()
    assert "==> launcher pod maskrcnn-run-7f3a-" in log
    assert "step 2 loss" in log and log.rstrip().endswith("training finished")


def test_failure_surfaces_the_log_tail_and_deletes_the_job(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["fail"]) as fake:
        with pytest.raises(TrainingFailed) as info:
            _run(fake, tmp_path)
        assert fake.list(MPIJOBS, NS) == []
        assert len(_mpijob_creates(fake)) == 1, "a program failure is not resubmitted"
    assert "BackoffLimitExceeded" in str(info.value) and "launcher.log" in str(info.value)
    assert info.value.log_tail[-1] == "ValueError: loss is NaN"
    assert "ValueError: loss is NaN" in (tmp_path / "launcher.log").read_text()


def test_timeout_deletes_the_job(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["hang"]) as fake:
        started = time.monotonic()
        with pytest.raises(TrainingTimedOut, match="did not finish within 2 s"):
            _run(fake, tmp_path, timeout_seconds=2)
        assert time.monotonic() - started < 6
        assert fake.list(MPIJOBS, NS) == [] and len(fake.deleted) >= 1


def test_sigterm_deletes_the_job(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["hang"]) as fake:
        def terminate_when_running():
            while not fake.logs:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=terminate_when_running, daemon=True).start()
        with SigtermGuard() as guard, pytest.raises(Terminated):
            _run(fake, tmp_path, guard=guard)
        assert fake.list(MPIJOBS, NS) == []
        assert [d for d in fake.deleted if d[0] == MPIJOBS] == [(MPIJOBS, NS, job_base_name(RUN_ID))]


def test_retry_after_a_crash_adopts_the_running_job(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["succeed"]) as fake:
        # What a crashed first try left behind: its MPIJob, still running.
        crashed = _build(job_base_name(RUN_ID), 0)
        fake.create(MPIJOBS, NS, crashed, {})
        result = _run(fake, tmp_path)
        assert result.adopted and result.name == job_base_name(RUN_ID)
        assert len(_mpijob_creates(fake)) == 0, "the retry must not create a second MPIJob"
        assert fake.list(MPIJOBS, NS) == []


def test_a_failed_job_of_an_earlier_try_is_replaced_by_a_new_attempt(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["fail", "succeed"]) as fake:
        with pytest.raises(TrainingFailed):
            MPIJobRunner(fake.api_client(), NS, _settings(tmp_path)).run(
                base_name=job_base_name(RUN_ID), run_id=RUN_ID, build=lambda n, a: _keep(fake, _build(n, a)))
        result = _run(fake, tmp_path)
        assert result.name == job_base_name(RUN_ID) + "-r1" and not result.adopted


def _keep(fake, manifest):
    """Simulate a runner killed before its clean-up: re-create the failed job after deletion."""
    original_remove = fake.remove

    def remove_once(resource, namespace, name):
        if resource == MPIJOBS:
            fake.remove = original_remove
            time.sleep(0.3)  # let the scripted failure land first
            return fake.get(resource, namespace, name)
        return original_remove(resource, namespace, name)

    fake.remove = remove_once
    return manifest


@pytest.mark.parametrize("scenario", ["evict", "node-lost"])
def test_preemption_resubmits_a_fresh_job(tmp_path, scenario):
    with FakeKubernetes(mpijob_scenarios=[scenario, "succeed"]) as fake:
        result = _run(fake, tmp_path)
        base = job_base_name(RUN_ID)
        assert result.name == f"{base}-r1" and result.attempts == 2
        assert [p for p in _mpijob_creates(fake)] == [f"/apis/kubeflow.org/v2beta1/namespaces/{NS}/mpijobs"] * 2
        assert (MPIJOBS, NS, base) in fake.deleted and (MPIJOBS, NS, f"{base}-r1") in fake.deleted
        assert fake.list(MPIJOBS, NS) == []


def test_preemption_resubmissions_are_bounded(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["evict"] * 5) as fake:
        with pytest.raises(TrainingFailed, match="preempted again after 2 resubmissions"):
            _run(fake, tmp_path, max_resubmits=2)
        assert len(_mpijob_creates(fake)) == 3
        assert fake.list(MPIJOBS, NS) == []


def test_invalid_manifest_is_rejected_before_anything_is_created(tmp_path):
    def bad_build(name, attempt):
        job = _build(name, attempt)
        job["spec"]["slotPerWorker"] = 8
        return job

    with FakeKubernetes() as fake:
        with pytest.raises(Exception, match="spec.slotPerWorker: unknown field"):
            MPIJobRunner(fake.api_client(), NS, _settings(tmp_path)).run(
                base_name="job", run_id=RUN_ID, build=bad_build)
        assert _mpijob_creates(fake) == []


def test_run_label_ties_the_job_to_its_run(tmp_path):
    assert _build("x", 0)["metadata"]["labels"][LABEL_RUN_ID] == RUN_ID


def test_preemption_evidence_tells_eviction_from_program_failure():
    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    failed_worker = {"metadata": {"name": "w-0", "uid": "1", "labels": {"training.kubeflow.org/job-role": "worker"}},
                     "status": {"phase": "Failed", "reason": None}}
    assert preemption_evidence(job, [failed_worker], {"w-0": "1"}) is None
    evicted = {**failed_worker, "status": {"phase": "Failed", "reason": "Evicted", "message": "low memory"}}
    assert "Evicted" in preemption_evidence(job, [evicted], {})
    tainted = {**failed_worker, "status": {"phase": "Running", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}]}}
    assert "DeletionByTaintManager" in preemption_evidence(job, [tainted], {})
    assert "disappeared" in preemption_evidence(job, [], {"w-0": "1"})
    assert "replaced" in preemption_evidence(job, [failed_worker], {"w-0": "2"})


def test_sigterm_during_clean_up_is_deferred_until_the_step_is_done():
    steps = []
    with SigtermGuard() as guard, pytest.raises(Terminated):
        with guard.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            steps.append("clean-up finished")  # not interrupted
        steps.append("not reached")
    assert steps == ["clean-up finished"]


def test_a_job_deleted_by_someone_else_fails_the_run(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["hang"]) as fake:
        def delete_when_running():
            while not fake.logs:
                time.sleep(0.02)
            fake.remove(MPIJOBS, NS, job_base_name(RUN_ID))

        threading.Thread(target=delete_when_running, daemon=True).start()
        with pytest.raises(TrainingFailed, match="deleted by someone else"):
            _run(fake, tmp_path)


def test_a_broken_log_stream_is_resumed_without_duplicates_or_gaps(tmp_path):
    with FakeKubernetes(mpijob_scenarios=["succeed-slowly"]) as fake:
        fake.log_stream_breaks = 2
        _run(fake, tmp_path)
        (launcher_lines,) = [lines for (ns, pod), lines in fake.logs.items() if "-launcher-" in pod]
        assert fake.log_stream_breaks == 0, "the fake cut the stream twice"
        assert max(fake.log_follows.values()) == 3
    written = (tmp_path / "launcher.log").read_text().splitlines()
    assert written[0].startswith("==> launcher pod") and written[1:] == launcher_lines
