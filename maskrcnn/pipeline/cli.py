"""`maskrcnn pipeline ...` subcommands: compile, run --local, stop, submit, schedule."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from maskrcnn.errors import UserError


def _compile(args: argparse.Namespace) -> int:
    from maskrcnn.pipeline.compile import compile_pipeline

    print(compile_pipeline(args.out))
    return 0


def _run(args: argparse.Namespace) -> int:
    if not args.local:
        raise UserError("`maskrcnn pipeline run` runs on this machine: add --local "
                        "(for a cluster use `maskrcnn pipeline submit --host URL`)")
    from maskrcnn.pipeline.local_run import LocalRun, format_summary, run_locally

    for name in ("train_images", "val_images", "max_steps", "processes"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    summary = run_locally(LocalRun(
        workdir=Path(args.workdir), train_images=args.train_images, val_images=args.val_images, seed=args.seed,
        preset=args.preset, max_steps=args.max_steps, processes=args.processes, port=args.port,
        min_box_ap=args.min_box_ap, min_mask_ap=args.min_mask_ap, overrides=tuple(args.overrides),
    ))
    print(format_summary(summary))
    return 0


def _stop(args: argparse.Namespace) -> int:
    from maskrcnn.pipeline.local_server import stop

    stopped = stop(Path(args.workdir) / "serving")
    print("stopped the local server" if stopped else f"no local server is running for {args.workdir}")
    return 0


def _package_and_params(args: argparse.Namespace):
    from maskrcnn.pipeline.compile import committed_package
    from maskrcnn.pipeline.kfp_client import parse_params, pipeline_inputs

    package = Path(args.package) if args.package else committed_package()
    if not package.is_file():
        raise UserError(f"pipeline package {package} not found; create it with `maskrcnn pipeline compile --out {package}`")
    return package, parse_params(args.params, pipeline_inputs(package))


def _submit(args: argparse.Namespace) -> int:
    from maskrcnn.pipeline.kfp_client import submit

    package, params = _package_and_params(args)
    result = submit(host=args.host, package=package, params=params, experiment=args.experiment,
                    run_name=args.run_name, namespace=args.namespace, service_account=args.service_account)
    print(json.dumps(result, indent=2))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from maskrcnn.pipeline.kfp_client import check_cron, schedule

    check_cron(args.cron)  # before anything touches the network
    package, params = _package_and_params(args)
    result = schedule(host=args.host, package=package, params=params, experiment=args.experiment, name=args.name,
                      cron=args.cron, max_concurrency=args.max_concurrency, catchup=args.catchup,
                      namespace=args.namespace, service_account=args.service_account)
    print(json.dumps(result, indent=2))
    return 0


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="KFP API address, e.g. http://127.0.0.1:8080 after a port-forward")
    parser.add_argument("--experiment", default="maskrcnn", help="KFP experiment (created if missing)")
    parser.add_argument("--namespace", default=None, help="KFP profile namespace (multi-user installs)")
    parser.add_argument("--service-account", default=None,
                        help="service account of the run's steps; it must be allowed to create MPIJobs and "
                             "Deployments in the pipeline's namespace (manifests/base/rbac.yaml: maskrcnn-runner)")
    parser.add_argument("--package", default=None, help="compiled pipeline YAML (default: the committed pipelines/maskrcnn_pipeline.yaml)")
    parser.add_argument("params", nargs="*", metavar="NAME=VALUE",
                        help="pipeline parameters, e.g. nodes=4 source=s3://bucket/coco (lists/dicts as JSON)")


def register(commands) -> None:
    """Add this stage's subcommands (see maskrcnn.cli.Commands)."""
    from maskrcnn.cli import add_config_arguments
    from maskrcnn.pipeline.local_run import LocalRun  # light: kfp and TensorFlow load only when it runs

    parser = commands.subcommand("pipeline", "compile", "compile the pipeline to its YAML package", _compile)
    parser.add_argument("--out", default=None, help="output file (default: pipelines/maskrcnn_pipeline.yaml)")

    parser = commands.subcommand("pipeline", "run", "run the whole pipeline on this machine (kfp.local)", _run)
    parser.add_argument("--local", action="store_true", help="run with kfp.local on this machine (required)")
    parser.add_argument("--workdir", default="runs/demo", help="working directory (data cache, runs, server)")
    parser.add_argument("--train-images", type=int, default=LocalRun.train_images, help="generated training images")
    parser.add_argument("--val-images", type=int, default=LocalRun.val_images, help="generated validation images")
    parser.add_argument("--seed", type=int, default=LocalRun.seed, help="seed of the generated dataset")
    parser.add_argument("--max-steps", type=int, default=LocalRun.max_steps, help="training steps")
    parser.add_argument("--processes", type=int, default=LocalRun.processes, help="training processes (horovodrun -np)")
    parser.add_argument("--port", type=int, default=LocalRun.port, help="port of the local server (a free one if taken)")
    parser.add_argument("--min-box-ap", type=float, default=LocalRun.min_box_ap, help="deploy gate: minimum box AP")
    parser.add_argument("--min-mask-ap", type=float, default=LocalRun.min_mask_ap, help="deploy gate: minimum mask AP")
    add_config_arguments(parser, default_preset="tiny")

    parser = commands.subcommand("pipeline", "stop", "stop the local server a local run started", _stop)
    parser.add_argument("--workdir", default="runs/demo", help="working directory of the local run")

    parser = commands.subcommand("pipeline", "submit", "upload the pipeline to Kubeflow Pipelines and start a run",
                                 _submit)
    _add_server_arguments(parser)
    parser.add_argument("--run-name", default="maskrcnn-coco", help="run name shown in the KFP UI")

    parser = commands.subcommand("pipeline", "schedule", "create a recurring run (scheduled retraining)", _schedule)
    _add_server_arguments(parser)
    parser.add_argument("--cron", required=True,
                        help='6-field cron, seconds first: "0 0 3 * * 0" = Sundays 03:00 (UTC on most clusters)')
    parser.add_argument("--name", default="maskrcnn-coco-retraining", help="recurring run name")
    parser.add_argument("--max-concurrency", type=int, default=1,
                        help="runs at the same time (1: a run holds GPUs for hours)")
    parser.add_argument("--catchup", action="store_true", help="backfill runs missed while paused (off by default)")
