"""Download step: COCO 2017 onto the data volume; the Dataset artifact records where."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from maskrcnn.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def download(source: str, data_root: str, data_volume: str, coco: Output[Dataset]):
    """Fetch COCO 2017 (official URLs when source is empty, https://, s3:// or a folder), verified."""
    from maskrcnn.pipeline.artifacts import publish
    from maskrcnn.pipeline.data_steps import download_step

    publish(coco, download_step(source=source, data_root=data_root, data_volume=data_volume))
