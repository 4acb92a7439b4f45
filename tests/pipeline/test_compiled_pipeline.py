"""The compiled pipeline: up to date, valid against KFP's own protos, wired and configured as designed."""

import importlib
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from maskrcnn import images

PIPELINES_DIR = Path(__file__).resolve().parents[2] / "pipelines"
PIPELINE_FILES = sorted(p for p in PIPELINES_DIR.glob("*.py") if p.name != "__init__.py")
STEPS = ["download", "convert", "train", "evaluate", "deploy"]


def _documents(path: Path) -> list[dict]:
    with open(path) as f:
        return list(yaml.safe_load_all(f))


@pytest.fixture(scope="module")
def specs():
    pipeline_doc, platform_doc = _documents(PIPELINES_DIR / "maskrcnn_pipeline.yaml")
    pipeline = json_format.ParseDict(pipeline_doc, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    platform = json_format.ParseDict(platform_doc, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    return pipeline, platform


def test_there_is_a_pipeline():
    assert PIPELINE_FILES, "no pipeline definitions found under pipelines/"


@pytest.mark.parametrize("source", PIPELINE_FILES, ids=lambda p: p.name)
def test_recompiling_reproduces_the_committed_yaml(source, tmp_path):
    committed = source.with_suffix(".yaml")
    assert committed.is_file(), f"{committed.name} is missing: run `python -m pipelines.{source.stem}`"
    module = importlib.import_module(f"pipelines.{source.stem}")
    out = tmp_path / committed.name
    module.compile_to(str(out))
    assert out.read_bytes() == committed.read_bytes(), (
        f"{committed.name} is stale: run `python -m pipelines.{source.stem}` and commit the result"
    )


@pytest.mark.parametrize("source", PIPELINE_FILES, ids=lambda p: p.name)
def test_every_document_parses_with_kfp_protos(source):
    documents = _documents(source.with_suffix(".yaml"))
    assert len(documents) == 2, "expected a pipeline spec and a platform spec"
    json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    platform = json_format.ParseDict(documents[1], pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    for executor in platform.platforms["kubernetes"].deployment_spec.executors.values():
        json_format.ParseDict(
            json_format.MessageToDict(executor), kubernetes_executor_config_pb2.KubernetesExecutorConfig(),
            ignore_unknown_fields=False,
        )


def test_five_steps_chained_in_order(specs):
    pipeline, _ = specs
    tasks = pipeline.root.dag.tasks
    assert sorted(tasks) == sorted(STEPS)
    for before, after in zip(STEPS, STEPS[1:]):
        assert before in tasks[after].dependent_tasks, f"{after} does not consume {before}'s output"
    producers = {
        name: {a.task_output_artifact.producer_task for a in task.inputs.artifacts.values()}
        for name, task in tasks.items()
    }
    assert producers["convert"] == {"download"}
    assert producers["train"] == {"convert"}
    assert producers["evaluate"] == {"train", "convert", "download"}
    assert producers["deploy"] == {"train", "evaluate", "download"}


def test_caching_on_for_data_off_for_launch_steps(specs):
    pipeline, _ = specs
    tasks = pipeline.root.dag.tasks
    assert tasks["download"].caching_options.enable_cache
    assert tasks["convert"].caching_options.enable_cache
    for step in ("train", "evaluate", "deploy"):
        assert tasks[step].HasField("caching_options") and not tasks[step].caching_options.enable_cache, step
    # The data steps' cache key is the data source: it is one of download's inputs.
    assert tasks["download"].inputs.parameters["source"].component_input_parameter == "source"


def test_retries_only_on_data_steps(specs):
    pipeline, _ = specs
    tasks = pipeline.root.dag.tasks
    assert tasks["download"].retry_policy.max_retry_count == 3
    assert tasks["convert"].retry_policy.max_retry_count == 2
    for step in ("train", "evaluate", "deploy"):
        assert tasks[step].retry_policy.max_retry_count == 0, f"{step} must not be retried blindly"


def test_kubernetes_settings(specs):
    pipeline, platform = specs
    executors = platform.platforms["kubernetes"].deployment_spec.executors
    configs = {
        name: json_format.ParseDict(json_format.MessageToDict(struct),
                                    kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        for name, struct in executors.items()
    }
    assert sorted(configs) == sorted(f"exec-{s}" for s in STEPS)
    for name, config in configs.items():
        (mount,) = config.pvc_mount
        assert mount.mount_path == "/data" and mount.pvc_name_parameter.component_input_parameter == "data_volume", name
    (secret,) = configs["exec-download"].secret_as_env
    assert secret.secret_name_parameter.component_input_parameter == "aws_secret"
    assert {m.env_var for m in secret.key_to_env} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    evaluate = configs["exec-evaluate"]
    assert evaluate.node_selector.node_selector_json.component_input_parameter == "gpu_node_selector"
    assert evaluate.tolerations[0].toleration_json.component_input_parameter == "gpu_tolerations"
    resources = pipeline.deployment_spec["executors"]["exec-evaluate"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"


def test_components_run_the_project_images_without_installing(specs):
    pipeline, _ = specs
    executors = pipeline.deployment_spec["executors"]
    expected = {"download": images.DATA_IMAGE, "convert": images.DATA_IMAGE, "train": images.PIPELINE_IMAGE,
                "evaluate": images.TRAIN_IMAGE, "deploy": images.PIPELINE_IMAGE}
    for step, image in expected.items():
        container = executors[f"exec-{step}"]["container"]
        assert container["image"] == image
        command = " ".join(container["command"])
        assert "pip install" not in command, f"{step} installs packages at run time"
        assert "from maskrcnn.pipeline" in command, f"{step} does not call the maskrcnn library"


def test_pipeline_parameters_cover_the_cluster_knobs(specs):
    pipeline, _ = specs
    parameters = pipeline.root.input_definitions.parameters
    for name in ("source", "data_volume", "namespace", "nodes", "gpus_per_node", "batch_per_gpu", "epochs",
                 "max_steps", "preset", "train_image", "serve_image", "min_box_ap", "min_mask_ap", "executor"):
        assert name in parameters, name
    assert parameters["executor"].default_value.string_value == "cluster"
