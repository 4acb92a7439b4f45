"""Evaluate step: COCO box/mask AP in the KFP UI, the HTML report, and a Markdown summary."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from maskrcnn.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    shards: Input[Dataset],
    coco: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
):
    """COCOeval of the model on val2017; the Metrics artifact's file is metrics.json."""
    from maskrcnn.pipeline.artifacts import location
    from maskrcnn.pipeline.evaluate_step import evaluate_step, ui_metrics
    from maskrcnn.utils.io import atomic_write, write_json

    result = evaluate_step(
        model_path=str(location(model)), shards_path=str(location(shards)), coco_path=str(location(coco))
    )
    for name, value in ui_metrics(result["metrics"]).items():
        metrics.log_metric(name, value)
    write_json(metrics.path, result["metrics"])
    with atomic_write(report.path, "w") as f:
        f.write(result["html"])
    with atomic_write(summary.path, "w") as f:
        f.write(result["markdown"])
