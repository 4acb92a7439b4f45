"""Train step: an MPIJob with Horovod on the cluster, horovodrun on this machine."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from maskrcnn.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train(
    shards: Input[Dataset],
    executor: str,
    run_id: str,
    data_root: str,
    data_volume: str,
    namespace: str,
    train_image: str,
    preset: str,
    config_overrides: List[str],
    nodes: int,
    gpus_per_node: int,
    batch_per_gpu: int,
    epochs: float,
    max_steps: int,
    local_processes: int,
    gpu_node_selector: Dict[str, str],
    gpu_tolerations: List[dict],
    timeout_hours: float,
    model: Output[Model],
):
    """Train Mask R-CNN on the shards; the Model artifact records the model dir on the volume."""
    from maskrcnn.pipeline.artifacts import location, publish, run_dir
    from maskrcnn.pipeline.train_step import k8s_train_args, schedule_overrides, train_step

    k8s_args = k8s_train_args(
        run_id=run_id,
        namespace=namespace,
        image=train_image,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        data_volume=data_volume,
        data_root=data_root,
        node_selector=gpu_node_selector,
        tolerations=gpu_tolerations,
        timeout_hours=timeout_hours,
    )
    result = train_step(
        executor=executor,
        shards_path=str(location(shards)),
        run_dir=str(run_dir(data_root, run_id)),
        preset=preset,
        overrides=schedule_overrides(batch_per_gpu=batch_per_gpu, epochs=epochs, max_steps=max_steps)
        + list(config_overrides),
        local_processes=local_processes,
        k8s_args=k8s_args,
        data_root=data_root,
        data_volume=data_volume,
    )
    publish(model, result)
