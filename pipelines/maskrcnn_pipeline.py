"""The pipeline: download → convert → train → evaluate → deploy (wiring only).

Compile: ``python -m pipelines.maskrcnn_pipeline`` or ``maskrcnn pipeline compile`` writes
``maskrcnn_pipeline.yaml`` beside this file (committed; a test checks it is up to date).

Cluster settings, and why:
- every step mounts the data volume (a ReadWriteMany PVC named by ``data_volume``) at ``/data``:
  COCO, its shards and the model stay there and artifacts carry their location;
- download and convert retry (network, preemptible CPU nodes) and are cached: their inputs are the
  data source, the volume and the shard counts, so KFP's cache key is the data source;
- train, evaluate and deploy are never cached: a cached launch step would silently skip training;
- the train step's own pod is small: it only runs ``maskrcnn k8s train``, which creates the MPIJob
  and deletes it when the step ends or is cancelled (SIGTERM), so no exit handler is needed;
- evaluate runs on one GPU node (node selector and tolerations are parameters).
"""

from typing import Dict, List, NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model

from components.convert import convert
from components.deploy import deploy
from components.download import download
from components.evaluate import evaluate
from components.train import train
from maskrcnn.images import SERVE_IMAGE, TRAIN_IMAGE

DATA_MOUNT = "/data"
AWS_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

Outputs = NamedTuple(
    "Outputs",
    coco=Dataset,
    shards=Dataset,
    model=Model,
    metrics=Metrics,
    report=HTML,
    decision=Markdown,
    endpoint=str,
)


@dsl.pipeline(name="maskrcnn-coco", description="Mask R-CNN on COCO 2017: download, convert, train (MPIJob, Horovod), evaluate, gated deploy.")
def maskrcnn_pipeline(
    source: str = "",
    data_volume: str = "maskrcnn-data",
    namespace: str = "maskrcnn",
    aws_secret: str = "maskrcnn-aws-credentials",
    preset: str = "r50-fpn-1x",
    config_overrides: List[str] = ["BACKBONE.WEIGHTS=/data/pretrained/ImageNet-R50-AlignPadding.npz"],
    nodes: int = 2,
    gpus_per_node: int = 8,
    batch_per_gpu: int = 4,
    epochs: float = 12.0,
    max_steps: int = 0,
    train_shards: int = 256,
    val_shards: int = 32,
    convert_workers: int = 8,
    train_image: str = TRAIN_IMAGE,
    serve_image: str = SERVE_IMAGE,
    gpu_node_selector: Dict[str, str] = {},
    gpu_tolerations: List[dict] = GPU_TOLERATIONS,
    eval_gpus: int = 1,
    train_timeout_hours: float = 72.0,
    min_box_ap: float = 0.30,
    min_mask_ap: float = 0.27,
    serve_port: int = 8080,
    executor: str = "cluster",
    data_root: str = DATA_MOUNT,
    local_processes: int = 2,
) -> Outputs:
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

    download_task = download(source=source, data_root=data_root, data_volume=data_volume)
    download_task.set_display_name("download COCO").set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2)
    download_task.set_caching_options(enable_caching=True)
    kubernetes.use_secret_as_env(download_task, secret_name=aws_secret, secret_key_to_env=AWS_KEYS)

    convert_task = convert(
        coco=download_task.outputs["coco"],
        data_root=data_root,
        data_volume=data_volume,
        train_shards=train_shards,
        val_shards=val_shards,
        workers=convert_workers,
    )
    convert_task.set_display_name("convert to TFRecords").set_retry(num_retries=2, backoff_duration="60s")
    convert_task.set_caching_options(enable_caching=True)
    convert_task.set_cpu_request("4").set_memory_request("8G")

    train_task = train(
        shards=convert_task.outputs["shards"],
        executor=executor,
        run_id=run_id,
        data_root=data_root,
        data_volume=data_volume,
        namespace=namespace,
        train_image=train_image,
        preset=preset,
        config_overrides=config_overrides,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        batch_per_gpu=batch_per_gpu,
        epochs=epochs,
        max_steps=max_steps,
        local_processes=local_processes,
        gpu_node_selector=gpu_node_selector,
        gpu_tolerations=gpu_tolerations,
        timeout_hours=train_timeout_hours,
    )
    train_task.set_display_name("train (MPIJob)").set_caching_options(enable_caching=False)

    evaluate_task = evaluate(
        model=train_task.outputs["model"],
        shards=convert_task.outputs["shards"],
        coco=download_task.outputs["coco"],
    )
    evaluate_task.set_display_name("evaluate (COCO AP)").set_caching_options(enable_caching=False)
    evaluate_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(eval_gpus)
    kubernetes.add_node_selector_json(evaluate_task, gpu_node_selector)
    kubernetes.add_toleration_json(evaluate_task, gpu_tolerations)

    deploy_task = deploy(
        model=train_task.outputs["model"],
        metrics=evaluate_task.outputs["metrics"],
        coco=download_task.outputs["coco"],
        executor=executor,
        data_root=data_root,
        data_volume=data_volume,
        namespace=namespace,
        serve_image=serve_image,
        min_box_ap=min_box_ap,
        min_mask_ap=min_mask_ap,
        serve_port=serve_port,
    )
    deploy_task.set_display_name("deploy (gated)").set_caching_options(enable_caching=False)
    # The serving NetworkPolicy admits the smoke request only from pods with this label.
    kubernetes.add_pod_label(deploy_task, "maskrcnn.kubeflow.org/serving-client", "true")

    for task in (download_task, convert_task, train_task, evaluate_task, deploy_task):
        kubernetes.mount_pvc(task, pvc_name=data_volume, mount_path=DATA_MOUNT)
        kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "maskrcnn")

    return Outputs(
        coco=download_task.outputs["coco"],
        shards=convert_task.outputs["shards"],
        model=train_task.outputs["model"],
        metrics=evaluate_task.outputs["metrics"],
        report=evaluate_task.outputs["report"],
        decision=deploy_task.outputs["decision"],
        endpoint=deploy_task.outputs["Output"],
    )


def compile_to(package_path: str) -> None:
    """Compile the pipeline (pipeline spec + platform spec) to ``package_path``."""
    compiler.Compiler().compile(maskrcnn_pipeline, package_path=package_path)


if __name__ == "__main__":
    compile_to(__file__.replace(".py", ".yaml"))
