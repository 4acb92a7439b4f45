"""`maskrcnn k8s train` (MPIJob runner) and `maskrcnn k8s deploy` (gate, deploy, smoke, rollback)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maskrcnn.errors import UserError


def _key_values(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def _tolerations(items: list[str]) -> list[dict]:
    out = []
    for item in items:
        try:
            toleration = json.loads(item)
        except ValueError as e:
            raise UserError(f"--toleration {item!r} is not JSON ({e}): e.g. "
                            '\'{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}\'') from None
        if not isinstance(toleration, dict):
            raise UserError(f"--toleration {item!r}: must be a JSON object")
        out.append(toleration)
    return out


def training_command(args: argparse.Namespace) -> list[str] | str:
    """The program every rank runs: ``--command``, or ``maskrcnn train`` from --data/--model-dir/config."""
    if args.command:
        if args.data or args.model_dir or args.overrides:
            raise UserError("pass either --command or --data/--model-dir [KEY=VALUE ...], not both")
        return args.command
    if not (args.data and args.model_dir):
        raise UserError("pass --data SHARDS_DIR and --model-dir DIR (paths inside the volume), or --command")
    return ["python3", "-m", "maskrcnn.cli", "train", "--data", args.data, "--model-dir", args.model_dir,
            "--preset", args.preset, *args.overrides]


def _train(args: argparse.Namespace) -> int:
    import yaml

    from maskrcnn.k8s.client import default_namespace, load_api_client
    from maskrcnn.k8s.crd import validate_mpijob
    from maskrcnn.k8s.mpijob import DataVolume, MPIJobOptions, SlotResources, build_mpijob
    from maskrcnn.k8s.runner import (
        MPIJobRunner, RunnerSettings, SigtermGuard, Terminated, TrainingFailed, job_base_name,
    )

    if not args.name and not args.run_id:
        raise UserError("pass --name (the MPIJob's name) or --run-id (the name is derived from it)")
    for flag, value, low in (("--nodes", args.nodes, 1), ("--gpus-per-node", args.gpus_per_node, 0),
                             ("--max-resubmits", args.max_resubmits, 0)):
        if value < low:
            raise UserError(f"{flag} {value}: must be >= {low}")
    namespace = args.namespace or default_namespace(kubeconfig=args.kubeconfig, context=args.context)
    base_name = args.name or job_base_name(args.run_id)
    command = training_command(args)
    resources = SlotResources(cpu=args.cpu_per_gpu, memory_gib=args.memory_per_gpu, shm_gib=args.shm_per_gpu)
    options = dict(efa_devices=args.efa, node_selector=_key_values(args.node_selector, "--node-selector"),
                   tolerations=_tolerations(args.toleration), run_id=args.run_id or "",
                   env=_key_values(args.env, "--env"), service_account=args.service_account,
                   ttl_seconds_after_finished=args.ttl, backoff_limit=args.backoff_limit)

    def build(name: str, attempt: int) -> dict:
        return build_mpijob(name=name, namespace=namespace, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                            command=command, data=DataVolume(args.pvc, args.mount_path), image=args.image,
                            resources=resources, options=MPIJobOptions(**options, attempt=attempt))

    if args.dry_run:
        manifest = build(base_name, 0)
        validate_mpijob(manifest)
        sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
        return 0
    settings = RunnerSettings(timeout_seconds=args.timeout or None, poll_seconds=args.poll_interval,
                              max_resubmits=args.max_resubmits,
                              log_file=Path(args.log_file or f"{base_name}-launcher.log"))
    with SigtermGuard() as guard:
        runner = MPIJobRunner(load_api_client(kubeconfig=args.kubeconfig, context=args.context), namespace, settings,
                              guard=guard)
        try:
            result = runner.run(base_name=base_name, run_id=args.run_id or "", build=build)
        except TrainingFailed as e:
            print(f"error: {e}", file=sys.stderr)
            if e.log_tail:
                print(f"--- last {len(e.log_tail)} lines of the launcher log ---", file=sys.stderr)
                print("\n".join(e.log_tail), file=sys.stderr)
            return e.exit_code
        except Terminated:
            print(f"terminated: MPIJob {namespace}/{base_name} deleted", file=sys.stderr)
            return Terminated.exit_code
    sys.stdout.write(json.dumps({"mpijob": result.name, "namespace": result.namespace, "attempts": result.attempts,
                                 "adopted": result.adopted, "log_file": str(result.log_file)}) + "\n")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from maskrcnn.k8s.client import default_namespace, load_api_client
    from maskrcnn.k8s.deploy import DeploySettings, deploy_model
    from maskrcnn.k8s.serving import ServingSpec, model_location

    location = model_location(args.model_uri, pvc=args.pvc, mount_path=args.mount_path)
    namespace = args.namespace or default_namespace(kubeconfig=args.kubeconfig, context=args.context)
    spec = ServingSpec(name=args.name, namespace=namespace, image=args.image, replicas=args.replicas, cpu=args.cpu,
                       memory=args.memory, service_account=args.service_account, aws_secret=args.aws_secret)
    settings = DeploySettings(rollout_timeout_seconds=args.rollout_timeout, poll_seconds=args.poll_interval,
                              smoke_url=args.smoke_url, kserve=args.kserve)
    report = deploy_model(load_api_client(kubeconfig=args.kubeconfig, context=args.context), spec,
                          metrics_path=args.metrics, model_uri=args.model_uri, location=location,
                          min_box_ap=args.min_box_ap, min_mask_ap=args.min_mask_ap, settings=settings)
    if args.report:
        report.write(args.report)
    sys.stdout.write(json.dumps({"status": report.status, "reason": report.reason}) + "\n")
    if report.status in ("refused", "deployed"):
        return 0
    print(f"error: {report.reason}", file=sys.stderr)
    return 1


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument("--namespace", default="", help="default: the pod's namespace, else the kubeconfig context's")
    group.add_argument("--kubeconfig", default=None, help="default: in-cluster service account, else $KUBECONFIG")
    group.add_argument("--context", default=None, help="kubeconfig context")
    group.add_argument("--poll-interval", type=float, default=10.0, help="seconds between status checks")


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    from maskrcnn.cli import add_config_arguments
    from maskrcnn.images import SERVE_IMAGE, TRAIN_IMAGE

    train = commands.subcommand("k8s", "train", "train on the cluster as an MPIJob (mpi-operator v2beta1) and wait "
                                "for it: launcher log kept, job deleted at the end, resubmitted after preemption",
                                _train)
    job = train.add_argument_group("job")
    job.add_argument("--name", default="", help="MPIJob name (default: derived from --run-id)")
    job.add_argument("--run-id", default="", help="pipeline run id: labels the job; a retry adopts its job")
    job.add_argument("--image", default=TRAIN_IMAGE)
    job.add_argument("--nodes", type=int, default=1, help="worker pods (one per node)")
    job.add_argument("--gpus-per-node", type=int, default=8, help="GPUs (= Horovod ranks) per worker; 0 = CPU only")
    job.add_argument("--pvc", "--data-pvc", dest="pvc", required=True, help="ReadWriteMany claim with shards and model dir")
    job.add_argument("--mount-path", default="/data", help="where pods mount the claim")
    job.add_argument("--efa", type=int, default=0, metavar="N", help="EFA devices per node (AWS); 0 = none")
    job.add_argument("--node-selector", action="append", default=[], metavar="KEY=VALUE")
    job.add_argument("--toleration", action="append", default=[], metavar="JSON")
    job.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra env for every rank")
    job.add_argument("--service-account", default="")
    job.add_argument("--cpu-per-gpu", type=float, default=8.0)
    job.add_argument("--memory-per-gpu", type=float, default=48.0, help="GiB, /dev/shm share included")
    job.add_argument("--shm-per-gpu", type=float, default=4.0, help="GiB of memory-backed /dev/shm")
    job.add_argument("--ttl", type=int, default=3600, help="ttlSecondsAfterFinished")
    job.add_argument("--backoff-limit", type=int, default=0, help="launcher retries inside one MPIJob")
    program = train.add_argument_group("program (either --command, or --data/--model-dir and config)")
    program.add_argument("--command", default="", help="shell command every rank runs")
    program.add_argument("--data", default="", help="training shards dir inside the volume")
    program.add_argument("--model-dir", default="", help="model dir inside the volume")
    add_config_arguments(train)
    run = train.add_argument_group("run")
    run.add_argument("--timeout", type=float, default=0, help="seconds for the whole run; 0 = none")
    run.add_argument("--max-resubmits", type=int, default=3, help="fresh MPIJobs after preemption")
    run.add_argument("--log-file", default="", help="launcher log copy (default: <name>-launcher.log)")
    run.add_argument("--dry-run", action="store_true", help="print the validated MPIJob and exit")
    _cluster_arguments(train)

    deploy = commands.subcommand("k8s", "deploy", "deploy the model when its AP passes the gate, smoke-test it, "
                                 "roll back on failure", _deploy)
    model = deploy.add_argument_group("model and gate")
    model.add_argument("--metrics", required=True, help="metrics.json of the model's evaluation")
    model.add_argument("--model-uri", required=True, help="s3://bucket/model, pvc://claim/path, or a path with --pvc")
    model.add_argument("--min-box-ap", type=float, required=True, help="COCO box AP as a fraction, e.g. 0.30")
    model.add_argument("--min-mask-ap", type=float, required=True, help="COCO mask AP as a fraction")
    model.add_argument("--pvc", default="", help="claim holding an absolute --model-uri path")
    model.add_argument("--mount-path", default="/data", help="where that claim is mounted in the pipeline")
    serving = deploy.add_argument_group("serving")
    serving.add_argument("--name", default="maskrcnn", help="Deployment/Service/PDB (or InferenceService) name")
    serving.add_argument("--image", default=SERVE_IMAGE)
    serving.add_argument("--replicas", type=int, default=2)
    serving.add_argument("--cpu", default="2")
    serving.add_argument("--memory", default="6Gi")
    serving.add_argument("--service-account", default="")
    serving.add_argument("--aws-secret", default="", help="Secret with AWS credentials for s3:// models")
    serving.add_argument("--kserve", action="store_true", help="deploy a KServe InferenceService instead")
    checks = deploy.add_argument_group("checks")
    checks.add_argument("--rollout-timeout", type=float, default=900.0, help="seconds")
    checks.add_argument("--smoke-url", default="", help="POST the smoke request here instead of the service proxy")
    checks.add_argument("--report", default="", help="JSON report (Markdown beside it, .md)")
    _cluster_arguments(deploy)
    deploy.set_defaults(poll_interval=2.0)
