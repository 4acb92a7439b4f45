"""Deploy step: the AP gate, a serving endpoint (Kubernetes Deployment, or a local server), a smoke request."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from maskrcnn.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    metrics: Input[Metrics],
    coco: Input[Dataset],
    executor: str,
    data_root: str,
    data_volume: str,
    namespace: str,
    serve_image: str,
    min_box_ap: float,
    min_mask_ap: float,
    serve_port: int,
    decision: Output[Markdown],
) -> str:
    """Deploy when box and mask AP pass the thresholds and beat the deployed model; returns the endpoint URL."""
    from maskrcnn.pipeline.artifacts import location
    from maskrcnn.pipeline.deploy_step import deploy_step, k8s_deploy_args
    from maskrcnn.utils.io import atomic_write

    outcome = deploy_step(
        executor=executor,
        model_path=str(location(model)),
        metrics_path=metrics.path,
        coco_path=str(location(coco)),
        min_box_ap=min_box_ap,
        min_mask_ap=min_mask_ap,
        data_root=data_root,
        port=serve_port,
        k8s_args=k8s_deploy_args(
            namespace=namespace, image=serve_image, data_volume=data_volume, data_root=data_root,
            min_box_ap=min_box_ap, min_mask_ap=min_mask_ap,
        ),
    )
    with atomic_write(decision.path, "w") as f:
        f.write(outcome.markdown)
    return outcome.endpoint
