"""Data stage: COCO download, generated dataset, TFRecord conversion, tf.data input pipeline."""
