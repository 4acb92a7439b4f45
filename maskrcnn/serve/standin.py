"""A model-free SavedModel with the exact serving signature, for serving tests and load benchmarks.

Its "detections" are read off the image: instance ``c`` (class ``c + 1``) is the set of pixels
whose channel ``c`` (R, G, B) exceeds ``mask_threshold * 255``, boxed tightly, scored by its area
fraction; only instances scoring ``>= score_threshold`` are returned. So a test knows the right answer from the image it sent, and the server's behaviour is
measured without a model's cost or quality getting in the way. Same inputs, outputs, dtypes and
padding rules as ``maskrcnn.train.export``; written with the model dir files the server reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from maskrcnn.utils.io import atomic_write, write_json

# COCO ids deliberately not contiguous, so id mapping bugs show.
STANDIN_CLASS_MAP = {"11": {"id": 1, "name": "red"}, "22": {"id": 2, "name": "green"}, "33": {"id": 3, "name": "blue"}}


def _build_module():
    import tensorflow as tf

    def decode(image_bytes):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)
        image.set_shape([None, None, 3])
        return image

    def detect_one(image_bytes, threshold, score_threshold, padded):
        image = tf.cast(decode(image_bytes), tf.float32) / 255.0
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        masks = tf.transpose(image, [2, 0, 1]) > threshold                       # [3, H, W]
        area = tf.reduce_sum(tf.cast(masks, tf.float32), axis=[1, 2])
        order = tf.argsort(tf.cast(area > 0, tf.int32), direction="DESCENDING", stable=True)
        masks, area = tf.gather(masks, order), tf.gather(area, order)
        valid = area > 0
        rows, cols = tf.reduce_any(masks, axis=2), tf.reduce_any(masks, axis=1)  # [3, H], [3, W]
        y1 = tf.argmax(tf.cast(rows, tf.int32), axis=1, output_type=tf.int32)
        y2 = h - tf.argmax(tf.cast(tf.reverse(rows, [1]), tf.int32), axis=1, output_type=tf.int32)
        x1 = tf.argmax(tf.cast(cols, tf.int32), axis=1, output_type=tf.int32)
        x2 = w - tf.argmax(tf.cast(tf.reverse(cols, [1]), tf.int32), axis=1, output_type=tf.int32)
        scores = 0.2 + 0.8 * area / tf.cast(h * w, tf.float32)
        valid = tf.logical_and(valid, scores >= score_threshold)
        # Kept instances first, as the real export returns them.
        kept_first = tf.argsort(tf.cast(valid, tf.int32), direction="DESCENDING", stable=True)
        valid, masks, order = (tf.gather(t, kept_first) for t in (valid, masks, order))
        boxes = tf.gather(tf.cast(tf.stack([y1, x1, y2, x2], axis=1), tf.float32), kept_first)
        scores = tf.gather(scores, kept_first)
        keep = tf.cast(valid, tf.float32)
        classes = (order + 1) * tf.cast(valid, tf.int32)
        binary = tf.cast(tf.logical_and(masks, valid[:, None, None]), tf.uint8)
        binary = tf.pad(binary, [[0, 0], [0, padded[0] - h], [0, padded[1] - w]])
        return boxes * keep[:, None], scores * keep, classes, binary, tf.reduce_sum(tf.cast(valid, tf.int32))

    class StandIn(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.float32, name="mask_threshold"),
            tf.TensorSpec([None], tf.float32, name="score_threshold"),
        ])
        def serve(self, image_bytes, mask_threshold, score_threshold):
            sizes = tf.map_fn(lambda b: tf.shape(decode(b))[:2], image_bytes, fn_output_signature=tf.int32)
            padded = tf.reduce_max(sizes, axis=0)
            boxes, scores, classes, masks, num = tf.map_fn(
                lambda args: detect_one(*args, padded), (image_bytes, mask_threshold, score_threshold),
                fn_output_signature=(tf.float32, tf.float32, tf.int32, tf.uint8, tf.int32),
            )
            masks = masks[:, :tf.reduce_max(num)]  # [N, M, Hmax, Wmax]: only kept detections have masks
            return {"num_detections": num, "boxes": boxes, "scores": scores, "classes": classes, "masks": masks,
                    "image_sizes": sizes}

    return StandIn()


def export_standin_model(model_dir: str | os.PathLike) -> Path:
    """Write ``model_dir/{saved_model/, class_map.json, config.yaml}`` for the stand-in; return ``model_dir``."""
    import tensorflow as tf

    from maskrcnn.config import get_config, to_yaml

    model_dir = Path(model_dir)
    module = _build_module()
    tf.saved_model.save(module, str(model_dir / "saved_model"), signatures={"serving_default": module.serve})
    write_json(model_dir / "class_map.json", STANDIN_CLASS_MAP)
    with atomic_write(model_dir / "config.yaml", "w") as f:
        f.write(to_yaml(get_config("tiny", ["NUM_CLASSES=3", "TEST.DETECTIONS_PER_IMAGE=3"])))
    return model_dir
