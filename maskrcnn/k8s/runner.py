"""Run one training MPIJob to its end: create or adopt, watch, keep the launcher log, clean up, resubmit.

``run_mpijob`` owns the job's whole life, so nothing depends on a pipeline exit handler:

- **idempotent**: a job already created for the same run id (a retried step after a crash) is
  adopted, not duplicated; a finished failure of an earlier try is replaced by a new attempt;
- **watched**: the MPIJob's conditions through a watch (rounds of ``poll_seconds``), its pods
  between rounds;
- **logged**: the launcher pod's log is streamed into ``log_file`` as it is written (it is lost
  with the pods otherwise), and its tail is part of the error when the job fails;
- **cleaned up**: the MPIJob is deleted when it ends, on timeout, on an error and on SIGTERM
  (``SigtermGuard`` turns the signal into ``Terminated`` and shields the clean-up from a second one);
- **preemption-aware**: a worker evicted, preempted, on a node that went away, or gone, is told
  apart from a failure of the program by the pods' status; the job is then deleted and a fresh
  MPIJob (next ``-r<attempt>`` name) submitted, at most ``max_resubmits`` times. The training
  program resumes from its latest checkpoint by itself.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from maskrcnn.k8s.client import api_error
from maskrcnn.k8s.crd import GROUP, PLURAL, VERSION, validate_mpijob
from maskrcnn.k8s.mpijob import (
    LABEL_ATTEMPT, LABEL_MANAGED_BY, LABEL_RUN_ID, LAUNCHER_CONTAINER, MANAGED_BY, OPERATOR_JOB_NAME_LABEL,
    OPERATOR_JOB_ROLE_LABEL, label_value,
)

logger = logging.getLogger(__name__)

# Pod status reasons and DisruptionTarget condition reasons that mean "the infrastructure took the
# pod away", not "the program failed".
PREEMPTION_REASONS = frozenset({
    "Evicted", "NodeLost", "NodeShutdown", "Shutdown", "Terminated", "Preempting", "UnexpectedAdmissionError",
    "DeletionByTaintManager", "DeletionByPodGC", "PreemptionByScheduler", "EvictionByEvictionAPI",
    "TerminationByKubelet",
})
TERMINAL_CONDITIONS = ("Succeeded", "Failed")
_GONE: dict = {}  # sentinel: the MPIJob does not exist


@dataclass(frozen=True)
class RunnerSettings:
    timeout_seconds: float | None = None   # the whole run, resubmissions included; None = no limit
    poll_seconds: float = 10.0             # watch round length (whole seconds on the wire, at least 1)
    max_resubmits: int = 3                 # fresh MPIJobs after preemption
    log_file: Path | None = None           # launcher log copy; None = not kept
    tail_lines: int = 40                   # log lines shown when the job fails


@dataclass(frozen=True)
class TrainResult:
    name: str             # the MPIJob that succeeded
    namespace: str
    attempts: int         # MPIJobs this run used, adopted ones included
    adopted: bool         # the first job was found, not created, by this call
    log_file: Path | None


class TrainingFailed(Exception):
    """The MPIJob failed (a program failure, or preempted more often than allowed)."""

    exit_code = 1

    def __init__(self, message: str, log_tail: list[str] = ()):
        super().__init__(message)
        self.log_tail = list(log_tail)


class TrainingTimedOut(TrainingFailed):
    exit_code = 124


class Terminated(Exception):
    """SIGTERM arrived (a cancelled pipeline run): the runner deletes its MPIJob and re-raises."""

    exit_code = 143


class SigtermGuard:
    """Turns SIGTERM into ``Terminated`` in the main thread; ``shielded()`` defers it during clean-up."""

    def __init__(self):
        self._previous = None
        self._shielded = 0
        self._pending = False
        self.received = False

    def __enter__(self) -> "SigtermGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.received:
            return  # already on the way out
        self.received = True
        if self._shielded:
            self._pending = True  # raised when the shielded clean-up step is done
        else:
            raise Terminated(f"signal {signum}")

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Finish the enclosed step even if SIGTERM arrives; then raise ``Terminated`` for it."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
        if not self._shielded and self._pending:
            self._pending = False
            raise Terminated("SIGTERM during clean-up")


def job_base_name(run_id: str) -> str:
    """A DNS-1035 MPIJob name for a pipeline run id, readable and unique (hash suffix)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:20].strip("-")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    return f"maskrcnn-{slug}-{digest}" if slug else f"maskrcnn-{digest}"


def attempt_name(base_name: str, attempt: int) -> str:
    return base_name if attempt == 0 else f"{base_name}-r{attempt}"


def conditions_of(job: dict) -> dict[str, dict]:
    """True conditions of an MPIJob by type."""
    return {c["type"]: c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


def terminal_state(job: dict) -> str | None:
    conditions = conditions_of(job)
    return next((kind for kind in TERMINAL_CONDITIONS if kind in conditions), None)


def preemption_evidence(job: dict, pods: list[dict], known_workers: dict[str, str]) -> str | None:
    """Why the infrastructure (not the program) broke this job, or None.

    ``pods`` are the job's pods as dicts (API field names); ``known_workers`` maps worker pod
    names seen running earlier to their uids, so a worker that vanished (its node deleted and the
    pod garbage-collected) or was replaced counts too.
    """
    failed = conditions_of(job).get("Failed")
    if failed and failed.get("reason") == "MPIJobEvicted":
        return f"MPIJob condition Failed/MPIJobEvicted: {failed.get('message', '')}"
    workers = {p["metadata"]["name"]: p for p in pods
               if (p["metadata"].get("labels") or {}).get(OPERATOR_JOB_ROLE_LABEL) == "worker"}
    for name, pod in sorted(workers.items()):
        status = pod.get("status") or {}
        if status.get("reason") in PREEMPTION_REASONS:
            return f"worker pod {name}: {status['reason']}: {status.get('message', '')}".rstrip(": ")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
                return f"worker pod {name}: disrupted ({condition.get('reason', '')})"
        if pod["metadata"].get("deletionTimestamp") and not terminal_state(job):
            return f"worker pod {name} is being deleted (node drained or removed)"
    for name, uid in sorted(known_workers.items()):
        if name not in workers:
            return f"worker pod {name} disappeared (its node is gone)"
        if workers[name]["metadata"].get("uid") != uid:
            return f"worker pod {name} was replaced (its node is gone)"
    if "Running" in conditions_of(job) and not terminal_state(job):
        # Running means every worker was up: a missing one was taken away.
        replicas = ((job.get("spec") or {}).get("mpiReplicaSpecs") or {}).get("Worker", {}).get("replicas", 0)
        name = (job.get("metadata") or {}).get("name", "")
        missing = [f"{name}-worker-{i}" for i in range(replicas) if f"{name}-worker-{i}" not in workers]
        if missing:
            return f"worker pod {missing[0]} disappeared while the job was running (its node is gone)"
    launchers = [p["metadata"].get("creationTimestamp") or "" for p in pods
                 if (p["metadata"].get("labels") or {}).get(OPERATOR_JOB_ROLE_LABEL) == "launcher"]
    if launchers:
        started = min(launchers)  # RFC 3339 UTC timestamps compare as strings
        for name, pod in sorted(workers.items()):
            if (pod["metadata"].get("creationTimestamp") or "") > started:
                return f"worker pod {name} was recreated after the launcher started (its node is gone)"
    return None


class LauncherLog:
    """Streams the launcher pod's log into a file (and a tail in memory) from a background thread."""

    def __init__(self, core_api, namespace: str, path: Path | None, tail_lines: int):
        self._core, self._namespace = core_api, namespace
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._pods: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", buffering=1)  # line-buffered: the file is current while training runs

    def follow(self, pod_name: str) -> None:
        """Start streaming ``pod_name`` (once per pod; a retried launcher is a new pod)."""
        if pod_name in self._pods:
            return
        self._pods.add(pod_name)
        thread = threading.Thread(target=self._stream, args=(pod_name,), name=f"log-{pod_name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def tail(self) -> list[str]:
        with self._lock:
            return list(self._tail)

    def finish(self, timeout: float) -> None:
        """Wait for the streams to end (they end with their pod) for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _write(self, line: str) -> None:
        with self._lock:
            self._tail.append(line)
            if self._file is not None:
                self._file.write(line + "\n")

    def _stream(self, pod_name: str) -> None:
        """Follow the pod's log until the pod ends or is gone, reconnecting when the stream breaks
        (API server restart, idle connection reset): a reconnect re-reads from the start and skips
        the lines already written."""
        from kubernetes import watch

        self._write(f"==> launcher pod {pod_name} <==")
        written = 0
        while True:
            seen = 0
            try:
                for line in watch.Watch().stream(self._core.read_namespaced_pod_log, pod_name, self._namespace,
                                                 container=LAUNCHER_CONTAINER, follow=True):
                    seen += 1
                    if seen > written:
                        self._write(line)
                        written = seen
            except Exception as e:  # 400 while the container starts, resets, API server restarts
                logger.debug("launcher log stream of %s: %s", pod_name, e)
            if self._pod_finished(pod_name):
                return
            time.sleep(1.0)

    def _pod_finished(self, pod_name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            phase = self._core.read_namespaced_pod(pod_name, self._namespace).status.phase
        except ApiException as e:
            return e.status == 404
        except Exception:
            return False
        return phase in ("Succeeded", "Failed")


def _attempt_of(job: dict) -> int:
    value = (job["metadata"].get("labels") or {}).get(LABEL_ATTEMPT, "0")
    return int(value) if value.isdigit() else 0


class MPIJobRunner:
    """Creates or adopts, watches and cleans up the MPIJobs of one training run."""

    def __init__(self, api_client, namespace: str, settings: RunnerSettings = RunnerSettings(),
                 guard: SigtermGuard | None = None):
        from kubernetes import client

        self.namespace, self.settings = namespace, settings
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._guard = guard or SigtermGuard()

    # ------------------------------------------------------------------ the run
    def run(self, *, base_name: str, run_id: str, build: Callable[[str, int], dict]) -> TrainResult:
        """Run until success; ``build(name, attempt)`` returns the MPIJob manifest for one attempt."""
        deadline = time.monotonic() + self.settings.timeout_seconds if self.settings.timeout_seconds else None
        log = LauncherLog(self._core, self.namespace, self.settings.log_file, self.settings.tail_lines)
        job, adopted = self._adopt(base_name, run_id)
        attempt = _attempt_of(job) if job else 0
        name = job["metadata"]["name"] if job else None
        first_attempt, resubmits = attempt, 0
        try:
            if job is not None and terminal_state(job) == "Failed" and not preemption_evidence(job, [], {}):
                logger.info("MPIJob %s of this run failed before; starting a new attempt", name)
                self._delete(name)
                attempt, name, job, adopted = attempt + 1, None, None, False
            if job is None:
                name = attempt_name(base_name, attempt)
                self._submit(build(name, attempt))
            while True:
                outcome, detail = self._watch(name, log, deadline)
                if outcome == "Succeeded":
                    log.finish(timeout=5.0)
                    logger.info("MPIJob %s/%s succeeded", self.namespace, name)
                    return TrainResult(name, self.namespace, attempt - first_attempt + 1, adopted, self.settings.log_file)
                if outcome == "Preempted" and resubmits < self.settings.max_resubmits:
                    logger.warning("MPIJob %s was preempted (%s): resubmitting (%d of at most %d); training resumes "
                                   "from its latest checkpoint", name, detail, resubmits + 1, self.settings.max_resubmits)
                    with self._guard.shielded():
                        self._delete(name)
                    resubmits, attempt = resubmits + 1, attempt + 1
                    name = attempt_name(base_name, attempt)
                    self._submit(build(name, attempt))
                    continue
                log.finish(timeout=5.0)
                if outcome == "Preempted":
                    raise TrainingFailed(f"MPIJob {self.namespace}/{name} was preempted again after "
                                         f"{resubmits} resubmissions ({detail}): raise --max-resubmits or find out "
                                         "why nodes are taken away", log.tail())
                raise TrainingFailed(f"MPIJob {self.namespace}/{name} failed: {detail}"
                                     + (f" (launcher log: {self.settings.log_file})" if self.settings.log_file else ""),
                                     log.tail())
        except TrainingTimedOut as e:
            e.log_tail = log.tail()
            raise
        finally:
            try:
                if name is not None:
                    with self._guard.shielded():
                        self._delete(name)
            finally:
                log.close()

    # ------------------------------------------------------------------ steps
    def _adopt(self, base_name: str, run_id: str) -> tuple[dict | None, bool]:
        """The newest MPIJob this run already created (older leftovers are deleted), if any."""
        from kubernetes.client.exceptions import ApiException

        try:
            if run_id:
                selector = f"{LABEL_RUN_ID}={label_value(run_id)},{LABEL_MANAGED_BY}={MANAGED_BY}"
                jobs = self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, label_selector=selector)["items"]
            else:
                try:
                    jobs = [self._custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, base_name)]
                except ApiException as e:
                    if e.status != 404:
                        raise
                    jobs = []
        except Exception as e:
            raise api_error(e, f"list MPIJobs in {self.namespace}") from None
        if not jobs:
            return None, False
        jobs.sort(key=_attempt_of)
        for stale in jobs[:-1]:
            self._delete(stale["metadata"]["name"])
        job = jobs[-1]
        logger.info("adopting MPIJob %s/%s of this run (%s)", self.namespace, job["metadata"]["name"],
                    terminal_state(job) or "in progress")
        return job, True

    def _submit(self, manifest: dict) -> None:
        from kubernetes.client.exceptions import ApiException

        validate_mpijob(manifest)  # a clear local error rather than a 422 from the server
        name = manifest["metadata"]["name"]
        try:
            self._custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest,
                                                         field_validation="Strict")
            logger.info("created MPIJob %s/%s", self.namespace, name)
        except ApiException as e:
            if e.status != 409:  # 409: created by a concurrent try of this run: adopt it
                raise api_error(e, f"create MPIJob {self.namespace}/{name}") from None
            logger.info("MPIJob %s/%s exists already: adopting it", self.namespace, name)
        except Exception as e:
            raise api_error(e, f"create MPIJob {self.namespace}/{name}") from None

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                         propagation_policy="Background")
            logger.info("deleted MPIJob %s/%s", self.namespace, name)
        except ApiException as e:
            if e.status != 404:
                logger.error("could not delete MPIJob %s/%s: %s; delete it by hand", self.namespace, name, e.reason)
        except Exception as e:
            logger.error("could not delete MPIJob %s/%s: %s; delete it by hand", self.namespace, name, e)

    def _watch(self, name: str, log: LauncherLog, deadline: float | None) -> tuple[str, str]:
        """Watch ``name`` until it ends: ("Succeeded" | "Failed" | "Preempted", detail)."""
        from kubernetes import watch

        job, resource_version, known_workers = None, None, {}
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TrainingTimedOut(f"MPIJob {self.namespace}/{name} did not finish within "
                                       f"{self.settings.timeout_seconds:g} s: deleted it; raise --timeout or check "
                                       "the launcher log")
            round_seconds = max(1, int(min(self.settings.poll_seconds, remaining or self.settings.poll_seconds)))
            try:
                kwargs = {"resource_version": resource_version} if resource_version else {}
                for event in watch.Watch().stream(
                        self._custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                        field_selector=f"metadata.name={name}", timeout_seconds=round_seconds, **kwargs):
                    if event["type"] == "DELETED":
                        return "Failed", "the MPIJob was deleted by someone else"
                    job = event["object"]
                    resource_version = job["metadata"].get("resourceVersion")
                    if terminal_state(job):
                        break
            except Exception as e:
                if isinstance(e, (Terminated, TrainingFailed)):
                    raise
                logger.warning("watch of MPIJob %s broke (%s); polling", name, e)
                job, resource_version = self._get(name), None
                if job is _GONE:
                    return "Failed", "the MPIJob was deleted by someone else"
                time.sleep(min(1.0, self.settings.poll_seconds))
            if job is None:
                continue
            pods = self._pods(name)
            if pods is None:  # unknown this round: never mistake a failed list for vanished workers
                continue
            for pod in pods:
                labels = pod["metadata"].get("labels") or {}
                if labels.get(OPERATOR_JOB_ROLE_LABEL) == "launcher" and (pod.get("status") or {}).get("phase") in (
                        "Running", "Succeeded", "Failed"):  # a Pending launcher has no log yet
                    log.follow(pod["metadata"]["name"])
            evidence = preemption_evidence(job, pods, known_workers)
            if evidence:
                return "Preempted", evidence
            known_workers.update({p["metadata"]["name"]: p["metadata"].get("uid") for p in pods
                                  if (p["metadata"].get("labels") or {}).get(OPERATOR_JOB_ROLE_LABEL) == "worker"
                                  and (p.get("status") or {}).get("phase") == "Running"})
            state = terminal_state(job)
            if state == "Succeeded":
                return "Succeeded", ""
            if state == "Failed":
                failed = conditions_of(job)["Failed"]
                return "Failed", f"{failed.get('reason', '')}: {failed.get('message', '')}".strip(": ")

    def _get(self, name: str) -> dict | None:
        """The MPIJob, ``_GONE`` when it does not exist, None when it cannot be read now."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return _GONE
            logger.warning("cannot read MPIJob %s (%s)", name, e.reason)
            return None
        except Exception as e:
            logger.warning("cannot read MPIJob %s (%s)", name, e)
            return None

    def _pods(self, name: str) -> list[dict] | None:
        try:
            pods = self._core.list_namespaced_pod(self.namespace, label_selector=f"{OPERATOR_JOB_NAME_LABEL}={name}")
        except Exception as e:
            logger.warning("cannot list the pods of MPIJob %s (%s)", name, e)
            return None
        return self._api_client.sanitize_for_serialization(pods)["items"]
