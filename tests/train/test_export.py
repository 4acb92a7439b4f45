"""The exported SavedModel: declared signature, outputs equal to model.detect + mask paste, and
load_predictor's per-image results."""

import dataclasses
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from maskrcnn.config import load_yaml
from maskrcnn.data.pipeline import preprocess_image
from maskrcnn.errors import UserError
from maskrcnn.model.mask_rcnn import MaskRCNN
from maskrcnn.model.postprocess import paste_masks
from maskrcnn.train.checkpoint import CHECKPOINT_SUBDIR, variables_by_path
from maskrcnn.train.export import OUTPUTS, SIGNATURE, export_saved_model, load_predictor, paste_binary_masks


def _image_bytes(synth_coco, index=0):
    files = sorted((synth_coco / "val2017").glob("*.jpg"))
    return files[index].read_bytes()


def _png(height, width, seed=1):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def restored(tiny_model_dir, tmp_path_factory):
    """The tiny model restored from its checkpoint with SCORE_THRESH=0 (so every image has
    detections to compare), and its own export in a separate model dir."""
    cfg = load_yaml(str(tiny_model_dir / "config.yaml"))
    cfg = dataclasses.replace(cfg, TEST=dataclasses.replace(cfg.TEST, SCORE_THRESH=0.0))
    model = MaskRCNN(cfg).build_for_inputs()
    latest = tf.train.latest_checkpoint(str(tiny_model_dir / CHECKPOINT_SUBDIR))
    tf.train.Checkpoint(model=variables_by_path(model)).restore(latest).expect_partial().assert_existing_objects_matched()
    out = tmp_path_factory.mktemp("export")
    (out / "class_map.json").write_text((tiny_model_dir / "class_map.json").read_text())
    export_saved_model(model, cfg, out)
    return model, cfg, out


def test_signature_declares_the_contract(tiny_model_dir):
    fn = tf.saved_model.load(str(tiny_model_dir / "saved_model")).signatures[SIGNATURE]
    inputs = fn.structured_input_signature[1]
    assert inputs["image_bytes"].dtype == tf.string and inputs["image_bytes"].shape.as_list() == [None]
    for name in ("mask_threshold", "score_threshold"):
        assert inputs[name].dtype == tf.float32 and inputs[name].shape.as_list() == [None], name
    outputs = fn.structured_outputs
    assert set(outputs) == set(OUTPUTS)
    cfg = load_yaml(str(tiny_model_dir / "config.yaml"))
    d = cfg.TEST.DETECTIONS_PER_IMAGE
    expected = {"num_detections": [None], "boxes": [None, d, 4], "scores": [None, d], "classes": [None, d],
                "masks": [None, None, None, None], "image_sizes": [None, 2]}
    for name, shape in expected.items():
        assert outputs[name].dtype == OUTPUTS[name][0], name
        assert outputs[name].shape.as_list() == shape, name


def test_exported_graph_equals_detect_plus_paste(restored, synth_coco):
    model, cfg, model_dir = restored
    images = [_image_bytes(synth_coco, 0), _png(150, 230)]
    fn = tf.saved_model.load(str(model_dir / "saved_model")).signatures[SIGNATURE]
    out = fn(image_bytes=tf.constant(images), mask_threshold=tf.constant([0.5, 0.3]), score_threshold=tf.constant([0.0, 0.0]))
    heights = []
    for i, (data, threshold) in enumerate(zip(images, [0.5, 0.3])):
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
        image, info = preprocess_image(decoded, cfg)
        ref = model.detect(image[None], info[None])
        n = int(ref["num_detections"][0])
        assert n > 0 and int(out["num_detections"][i]) == n
        np.testing.assert_allclose(out["boxes"][i, :n], ref["boxes"][0, :n], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(out["scores"][i, :n], ref["scores"][0, :n], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out["classes"][i, :n], ref["classes"][0, :n])
        h, w = decoded.shape[:2]
        heights.append(h)
        assert out["image_sizes"][i].numpy().tolist() == [h, w]
        pasted = paste_masks(ref["masks"][0, :n], ref["boxes"][0, :n], h, w).numpy() > threshold
        got = out["masks"][i, :n, :h, :w].numpy()
        assert set(np.unique(got)) <= {0, 1}
        assert np.mean(got != pasted) < 1e-3  # only pixels within float rounding of the threshold
        assert got.any()
        assert not out["masks"][i, :, h:, :].numpy().any() and not out["masks"][i, :, :, w:].numpy().any()
        assert not out["masks"][i, n:].numpy().any()
    assert out["masks"].shape[1] == max(out["num_detections"]) and out["masks"].shape[2] == max(heights)


def test_score_threshold_returns_the_same_leading_detections(restored, synth_coco):
    """Per-image score thresholds keep exactly the detections scoring at or above them, with the
    same boxes, classes and masks as an unthresholded call, and paste nothing else."""
    _, _, model_dir = restored
    images = [_image_bytes(synth_coco, 0), _png(150, 230)]
    fn = tf.saved_model.load(str(model_dir / "saved_model")).signatures[SIGNATURE]
    everything = fn(image_bytes=tf.constant(images), mask_threshold=tf.constant([0.5, 0.5]),
                    score_threshold=tf.constant([0.0, 0.0]))
    n0 = int(everything["num_detections"][0])
    assert n0 >= 3
    threshold = float(everything["scores"][0, n0 // 2])  # keeps about half of image 0's detections
    some = fn(image_bytes=tf.constant(images), mask_threshold=tf.constant([0.5, 0.5]),
              score_threshold=tf.constant([threshold, 2.0]))  # nothing scores 2.0
    k = int(some["num_detections"][0])
    assert k == int(np.sum(everything["scores"][0, :n0].numpy() >= threshold)) and 0 < k < n0
    assert int(some["num_detections"][1]) == 0 and some["masks"].shape[1] == k
    for name in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(some[name][0, :k], everything[name][0, :k])
        assert not some[name][:, k:].numpy().any() and not some[name][1].numpy().any()
    np.testing.assert_array_equal(some["masks"][0], everything["masks"][0, :k])
    assert not some["masks"][1].numpy().any()


def test_window_paste_equals_whole_image_paste():
    """Pasting each mask only over its box's window gives the same binary masks as pasting over the
    whole image, for boxes crossing the image border, tiny and degenerate boxes, and any threshold."""
    rng = np.random.default_rng(3)
    height, width, d = 61, 83, 40
    masks = tf.constant(rng.random((d, 14, 14)), tf.float32)
    y1, x1 = rng.uniform(-15, height, d), rng.uniform(-15, width, d)
    box_h = rng.uniform(0, 60, d) * (rng.random(d) > 0.1)          # some zero-height boxes
    box_w = np.where(rng.random(d) > 0.8, rng.uniform(0, 1.5, d), rng.uniform(0, 60, d))
    boxes = tf.constant(np.stack([y1, x1, y1 + box_h, x1 + box_w], axis=1), tf.float32)
    size = tf.constant([height, width])
    for threshold in (0.0, 0.3, 0.5):
        for num in (0, 1, d):
            got = paste_binary_masks(masks, boxes, size, tf.constant(threshold), tf.constant(num),
                                     tf.constant([d + 1, height + 3, width + 2])).numpy()
            assert got.shape == (d + 1, height + 3, width + 2)
            whole = (paste_masks(masks[:num], boxes[:num], height, width).numpy() > threshold).astype(np.uint8)
            np.testing.assert_array_equal(got[:num, :height, :width], whole)
            assert not got[num:].any() and not got[:, height:].any() and not got[:, :, width:].any()
    assert whole.any()


def test_predictor_trims_and_maps_categories(restored, synth_coco):
    _, _, model_dir = restored
    predictor = load_predictor(model_dir)
    class_map = json.loads((model_dir / "class_map.json").read_text())
    by_contiguous = {v["id"]: (int(k), v["name"]) for k, v in class_map.items()}
    low, high = predictor([_image_bytes(synth_coco, 1), _png(64, 96)], mask_threshold=0.2)
    assert low.image_size[1] > 0 and high.image_size == (64, 96)
    for det in (low, high):
        n = len(det.scores)
        assert det.boxes.shape == (n, 4) and det.classes.shape == (n,)
        assert det.masks.shape == (n, *det.image_size) and det.masks.dtype == np.uint8
        assert np.all(np.diff(det.scores) <= 1e-6) or n < 2
        assert [(int(c), s) for c, s in zip(det.category_ids, det.category_names)] == [by_contiguous[int(c)] for c in det.classes]
    kept = predictor([_image_bytes(synth_coco, 1)], mask_threshold=0.2, score_threshold=float(low.scores[0]))[0]
    np.testing.assert_array_equal(kept.scores, low.scores[low.scores >= low.scores[0]])
    np.testing.assert_array_equal(kept.masks, low.masks[:len(kept.scores)])
    # A higher mask threshold never grows a mask.
    strict = predictor([_png(64, 96)], mask_threshold=0.9)[0]
    assert np.all(strict.masks <= high.masks)
    assert predictor([]) == []


def test_undecodable_bytes_and_missing_model_dir(restored, tmp_path):
    _, _, model_dir = restored
    with pytest.raises(tf.errors.InvalidArgumentError):
        load_predictor(model_dir)([b"not an image"])
    with pytest.raises(UserError, match="not a model dir"):
        load_predictor(tmp_path)
