"""Convert step: COCO dir to TFRecord shards beside it on the data volume."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from maskrcnn.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def convert(
    coco: Input[Dataset],
    data_root: str,
    data_volume: str,
    train_shards: int,
    val_shards: int,
    workers: int,
    shards: Output[Dataset],
):
    """Write train2017 and val2017 as TFRecord shards with their manifests (skips verified shards)."""
    from maskrcnn.pipeline.artifacts import publish, record
    from maskrcnn.pipeline.data_steps import convert_step

    result = convert_step(
        coco_path=record(coco)["path"],
        coco_splits=record(coco)["splits"],
        data_root=data_root,
        data_volume=data_volume,
        train_shards=train_shards,
        val_shards=val_shards,
        workers=workers,
    )
    publish(shards, result)
