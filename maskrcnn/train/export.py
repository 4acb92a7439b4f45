"""SavedModel export with the serving signature, and ``load_predictor`` for Python callers.

Everything between encoded image bytes and pasted binary masks runs inside the exported graph:
decode (JPEG/PNG/BMP/GIF first frame, 3 channels), the pipeline's own ``preprocess_image`` (resize,
normalize, pad), ``model.detect``, mask pasting at the original size and thresholding (only for the
detections at or above the caller's score threshold, each only over its box's window). Evaluation
and serving both call this graph, so neither can drift from the training preprocessing. Every op
used has a CPU kernel (a serving pod may have no GPU); the export is reloaded and run once on a
generated image before it replaces a previous export.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from maskrcnn.config import Config
from maskrcnn.data.pipeline import preprocess_image
from maskrcnn.errors import UserError
from maskrcnn.model.postprocess import paste_masks
from maskrcnn.train.distributed import tf_variables
from maskrcnn.utils.io import read_json

log = logging.getLogger(__name__)

SAVED_MODEL_SUBDIR = "saved_model"
SIGNATURE = "serving_default"
# Declared outputs of the signature: name -> (dtype, rank).
OUTPUTS: dict[str, tuple[tf.DType, int]] = {
    "num_detections": (tf.int32, 1),
    "boxes": (tf.float32, 3),
    "scores": (tf.float32, 2),
    "classes": (tf.int32, 2),
    "masks": (tf.uint8, 4),
    "image_sizes": (tf.int32, 2),
}


# ----------------------------------------------------------------------------- the graph


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG (string scalar) -> uint8 ``[H, W, 3]`` RGB."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def kept_detections(scores: tf.Tensor, num: tf.Tensor, score_threshold: tf.Tensor) -> tf.Tensor:
    """int32 ``[N]``: how many of each image's leading detections have ``score >= score_threshold``.

    scores: float32 ``[N, D]`` sorted descending within each image's first ``num`` slots (as
    ``model.detect`` returns them); num: int32 ``[N]``; score_threshold: float32 ``[N]``.
    """
    valid = tf.sequence_mask(num, tf.shape(scores)[1])
    return tf.reduce_sum(tf.cast(tf.logical_and(valid, scores >= score_threshold[:, None]), tf.int32), axis=1)


def paste_binary_mask(
    mask: tf.Tensor, box: tf.Tensor, size: tf.Tensor, threshold: tf.Tensor, padded_size: tf.Tensor
) -> tf.Tensor:
    """One box mask -> binary uint8 ``[Hmax, Wmax]``, interpolated only over the box's window.

    mask: float32 ``[m, m]``; box: float32 ``[4]`` ``[y1,x1,y2,x2]`` original px; size: int32 ``[2]``
    (height, width); threshold: float32 scalar >= 0; padded_size: int32 ``[2]`` (Hmax, Wmax).
    Equal to thresholding ``paste_masks`` over the whole image: past half a mask cell outside the
    box the pasted value is exactly 0, and the window reaches a full cell plus a pixel beyond it.
    """
    cells = tf.cast(tf.shape(mask)[0], tf.float32)
    y1, x1, y2, x2 = tf.unstack(box)
    cell_h = tf.maximum(y2 - y1, 1e-6) / cells
    cell_w = tf.maximum(x2 - x1, 1e-6) / cells
    top = tf.clip_by_value(tf.cast(tf.floor(y1 - cell_h), tf.int32) - 1, 0, size[0])
    bottom = tf.clip_by_value(tf.cast(tf.math.ceil(y2 + cell_h), tf.int32) + 1, top, size[0])
    left = tf.clip_by_value(tf.cast(tf.floor(x1 - cell_w), tf.int32) - 1, 0, size[1])
    right = tf.clip_by_value(tf.cast(tf.math.ceil(x2 + cell_w), tf.int32) + 1, left, size[1])
    window = paste_masks(mask[None], box[None], bottom - top, right - left, top, left)[0]
    binary = tf.cast(window > threshold, tf.uint8)
    return tf.pad(binary, [[top, padded_size[0] - bottom], [left, padded_size[1] - right]])


def paste_binary_masks(
    masks: tf.Tensor, boxes: tf.Tensor, size: tf.Tensor, threshold: tf.Tensor, num: tf.Tensor, padded_shape: tf.Tensor
) -> tf.Tensor:
    """One image's first ``num`` box masks -> binary uint8 ``[M, Hmax, Wmax]`` at original size, zero-padded.

    masks: float32 ``[D, m, m]`` probabilities; boxes: float32 ``[D, 4]`` ``[y1,x1,y2,x2]`` original px;
    size: int32 ``[2]`` (height, width); threshold: float32 scalar >= 0 (a pixel is in the mask when
    its probability is > threshold); num: how many leading detections to paste (the paste's cost
    grows with detections x box area, so only those are pasted; rows past ``num`` are zero);
    padded_shape: int32 ``[3]`` (M, Hmax, Wmax) of the batch, ``M >= num``.
    """
    count = tf.maximum(num, 1)  # map_fn cannot stack zero elements of unknown shape; the extra row is dropped
    pasted = tf.map_fn(
        lambda args: paste_binary_mask(*args, size, threshold, padded_shape[1:]),
        (masks[:count], boxes[:count]),
        fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
    )
    return tf.pad(pasted[:num], [[0, padded_shape[0] - num], [0, 0], [0, 0]])


class ServingModule(tf.Module):
    """The model plus its pre/post-processing, with the ``serving_default`` signature."""

    def __init__(self, model: tf.keras.Model, cfg: Config):
        super().__init__(name="maskrcnn_serving")
        self.model = model
        # Keras 3 hides layers held in Python lists from TF's object graph; tracking the variables
        # directly lets tf.saved_model.save capture every weight the signature reads.
        self.model_variables = tf_variables(model.variables)
        pad_h, pad_w = cfg.PREPROC.PAD_SIZE
        preprocess_spec = (tf.TensorSpec([pad_h, pad_w, 3], tf.float32), tf.TensorSpec([5], tf.float32))

        def preprocess(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return preprocess_image(decode_image(image_bytes), cfg)

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.float32, name="mask_threshold"),
            tf.TensorSpec([None], tf.float32, name="score_threshold"),
        ])
        def serve(image_bytes, mask_threshold, score_threshold):
            images, image_info = tf.map_fn(preprocess, image_bytes, fn_output_signature=preprocess_spec)
            det = self.model.detect(images, image_info)
            sizes = tf.cast(tf.round(image_info[:, 3:5]), tf.int32)
            scores = tf.cast(det["scores"], tf.float32)
            num = kept_detections(scores, tf.cast(det["num_detections"], tf.int32), score_threshold)
            kept = tf.sequence_mask(num, tf.shape(scores)[1])  # [N, D]
            boxes = tf.where(kept[..., None], tf.cast(det["boxes"], tf.float32), 0.0)
            padded = tf.concat([tf.reduce_max(num, keepdims=True), tf.reduce_max(sizes, axis=0)], axis=0)
            masks = tf.map_fn(
                lambda args: paste_binary_masks(*args, padded),
                (tf.cast(det["masks"], tf.float32), boxes, sizes, mask_threshold, num),
                fn_output_signature=tf.TensorSpec([None, None, None], tf.uint8),
            )
            return {
                "num_detections": num,
                "boxes": boxes,
                "scores": tf.where(kept, scores, 0.0),
                "classes": tf.where(kept, tf.cast(det["classes"], tf.int32), 0),
                "masks": masks,
                "image_sizes": sizes,
            }

        self.serve = serve


# ----------------------------------------------------------------------------- export


def _probe_image(height: int = 96, width: int = 128) -> bytes:
    """A generated PNG to run the reloaded export once."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def verify_export(path: str | Path, detections_per_image: int) -> None:
    """Reload the SavedModel, check the signature's outputs and run it once; raise RuntimeError if wrong."""
    fn = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    declared = fn.structured_outputs
    for name, (dtype, rank) in OUTPUTS.items():
        if name not in declared:
            raise RuntimeError(f"export {path}: output {name!r} missing from {SIGNATURE}")
        if declared[name].dtype != dtype or declared[name].shape.rank != rank:
            raise RuntimeError(f"export {path}: output {name} is {declared[name]}, expected {dtype.name} rank {rank}")
    out = fn(image_bytes=tf.constant([_probe_image()]), mask_threshold=tf.constant([0.5]),
             score_threshold=tf.constant([0.0]))
    num = int(out["num_detections"][0])
    expected = {"boxes": (1, detections_per_image, 4), "masks": (1, num, 96, 128), "image_sizes": (1, 2)}
    for name, shape in expected.items():
        if tuple(out[name].shape) != shape:
            raise RuntimeError(f"export {path}: {name} has shape {tuple(out[name].shape)}, expected {shape}")


def export_saved_model(model: tf.keras.Model, cfg: Config, model_dir: str | Path) -> Path:
    """Write ``model_dir/saved_model`` (replacing a previous one only once the new one is verified)."""
    model_dir = Path(model_dir)
    final = model_dir / SAVED_MODEL_SUBDIR
    tmp = model_dir / f".{SAVED_MODEL_SUBDIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    module = ServingModule(model, cfg)
    tf.saved_model.save(module, str(tmp), signatures={SIGNATURE: module.serve})
    verify_export(tmp, cfg.TEST.DETECTIONS_PER_IMAGE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log.info("exported %s", final)
    return final


# ----------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Detections:
    """One image's detections, trimmed to its ``num_detections`` and its own size."""

    boxes: np.ndarray          # float32 [n, 4] [y1, x1, y2, x2] original-image pixels
    scores: np.ndarray         # float32 [n]
    classes: np.ndarray        # int32 [n] contiguous ids 1..NUM_CLASSES
    masks: np.ndarray          # uint8 [n, height, width] binary
    image_size: tuple[int, int]  # (height, width)
    category_ids: np.ndarray   # int64 [n] COCO category ids (from the class map)
    category_names: list[str]  # [n]


class Predictor:
    """``predictor(list_of_image_bytes, mask_threshold=0.5, score_threshold=0.0) -> list[Detections]``.

    Only detections with ``score >= score_threshold`` are returned (and have their masks pasted).
    """

    def __init__(self, saved_model_dir: str | Path, class_map: Mapping[str, Mapping[str, Any]]):
        self._fn = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
        by_contiguous = {int(v["id"]): (int(coco_id), str(v["name"])) for coco_id, v in class_map.items()}
        size = max(by_contiguous, default=0) + 1
        self._coco_ids = np.zeros(size, np.int64)
        self._names = [""] * size
        for cid, (coco_id, name) in by_contiguous.items():
            self._coco_ids[cid], self._names[cid] = coco_id, name
        self.class_map = dict(class_map)

    def __call__(
        self, images: Sequence[bytes], mask_threshold: float = 0.5, score_threshold: float | Sequence[float] = 0.0
    ) -> list[Detections]:
        """``score_threshold``: one value for all images or one per image. A file that cannot be
        decoded raises ``tf.errors.InvalidArgumentError``."""
        if not images:
            return []
        score_thresholds = np.broadcast_to(np.asarray(score_threshold, np.float32), [len(images)])
        out = self._fn(
            image_bytes=tf.constant(list(images), tf.string),
            mask_threshold=tf.fill([len(images)], tf.constant(mask_threshold, tf.float32)),
            score_threshold=tf.constant(score_thresholds),
        )
        out = {k: v.numpy() for k, v in out.items()}
        results = []
        for i in range(len(images)):
            n = int(out["num_detections"][i])
            h, w = (int(x) for x in out["image_sizes"][i])
            classes = out["classes"][i, :n].astype(np.int32)
            results.append(Detections(
                boxes=out["boxes"][i, :n].astype(np.float32),
                scores=out["scores"][i, :n].astype(np.float32),
                classes=classes,
                masks=out["masks"][i, :n, :h, :w],
                image_size=(h, w),
                category_ids=self._coco_ids[classes],
                category_names=[self._names[c] for c in classes],
            ))
        return results


def load_predictor(model_dir: str | Path) -> Predictor:
    """A Predictor for a model dir holding ``saved_model/`` and ``class_map.json``."""
    model_dir = Path(model_dir)
    saved = model_dir / SAVED_MODEL_SUBDIR
    class_map_path = model_dir / "class_map.json"
    if not (saved / "saved_model.pb").is_file() or not class_map_path.is_file():
        raise UserError(f"{model_dir}: not a model dir (needs saved_model/ and class_map.json from `maskrcnn train`)")
    return Predictor(saved, read_json(class_map_path))
