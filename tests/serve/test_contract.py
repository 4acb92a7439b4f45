"""The SageMaker notebook's client works unchanged: masks, boxes, ids and names as it expects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskrcnn.serve.app import PREDICT_PATHS
from maskrcnn.serve.standin import STANDIN_CLASS_MAP

from .conftest import b64, colored_image, encode_png
from notebook_client import rle_to_binary_mask


@pytest.fixture(scope="module")
def predictor(standin_model_dir):
    from maskrcnn.train.export import load_predictor

    return load_predictor(standin_model_dir)


def _expected_masks(pixels: np.ndarray, mask_threshold: float) -> dict[str, np.ndarray]:
    """The stand-in's instances: pixels whose channel exceeds the threshold, by class name."""
    names = ["red", "green", "blue"]
    return {names[c]: (pixels[..., c] / 255.0 > mask_threshold).astype(np.uint8) for c in range(3)
            if (pixels[..., c] / 255.0 > mask_threshold).any()}


@pytest.mark.parametrize("seed", [0, 1])
def test_notebook_client_decodes_every_mask(client, predictor, seed):
    pixels = colored_image(48, 64, seed)
    image = encode_png(pixels)
    # Exactly the notebook's request: json.dumps of img_id + base64, Content-Type application/json.
    body = json.dumps({"img_id": "000000000139.jpg", "img_data": b64(image)}).encode("utf-8")
    reply = client.post("/invocations", content=body, headers={"Content-Type": "application/json",
                                                                 "Accept": "application/json"})
    assert reply.status_code == 200
    data = json.loads(reply.content.decode("utf-8"))
    assert list(data) == ["annotations"]
    (det,) = predictor([image], mask_threshold=0.5)
    expected = _expected_masks(pixels, 0.5)
    assert sorted(a["category_name"] for a in data["annotations"]) == sorted(expected) == ["blue", "green", "red"]
    coco_id = {v["name"]: int(k) for k, v in STANDIN_CLASS_MAP.items()}
    for a in data["annotations"]:
        assert set(a) == {"bbox", "score", "category_id", "category_name", "segmentation"}
        assert a["segmentation"]["size"] == [48, 64]
        mask = rle_to_binary_mask(a["segmentation"]["counts"], tuple(a["segmentation"]["size"]))
        np.testing.assert_array_equal(mask, expected[a["category_name"]])
        k = list(det.category_names).index(a["category_name"])
        np.testing.assert_array_equal(mask, det.masks[k])
        assert a["category_id"] == coco_id[a["category_name"]]
        ys, xs = np.nonzero(mask)
        # [x, y, width, height] of the mask's tight box (the stand-in boxes its mask exactly)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert a["score"] == pytest.approx(float(det.scores[k]), abs=1e-5)


def test_coco_rle_decodes_to_the_same_mask(client):
    pixels = colored_image(40, 56, 3)
    image = b64(encode_png(pixels))
    row = client.post("/predict", json={"img_id": 1, "img_data": image}).json()["annotations"]
    coco = client.post("/predict", json={"img_id": 1, "img_data": image, "rle": "coco"}).json()["annotations"]
    assert [a["bbox"] for a in row] == [a["bbox"] for a in coco]
    for r, c in zip(row, coco):
        assert isinstance(c["segmentation"]["counts"], str)
        decoded = mask_utils.decode({"size": c["segmentation"]["size"], "counts": c["segmentation"]["counts"].encode()})
        np.testing.assert_array_equal(decoded, rle_to_binary_mask(r["segmentation"]["counts"], (40, 56)))


def test_every_path_gives_the_same_answer(client):
    body = {"img_id": "a", "img_data": b64(encode_png(colored_image(30, 30, 5)))}
    replies = [client.post(p, json=body) for p in PREDICT_PATHS]
    assert all(r.status_code == 200 for r in replies)
    assert len({r.content for r in replies}) == 1


def test_thresholds(client):
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[2:6, 3:9, 0] = 255          # red: area 24/600 -> score 0.2 + 0.8 * 0.04 = 0.232
    pixels[10:20, :, 2] = 150          # blue: value 0.59, area 300/600 -> score 0.6
    image = b64(encode_png(pixels))
    names = lambda **kw: sorted(a["category_name"] for a in  # noqa: E731
                                client.post("/predict", json={"img_id": "t", "img_data": image, **kw}).json()["annotations"])
    assert names() == ["blue"]                                   # default score_threshold 0.5
    assert names(score_threshold=0.0) == ["blue", "red"]
    assert names(score_threshold=0.0, mask_threshold=0.6) == ["red"]   # blue pixels 0.59 < 0.6


def test_standin_returns_only_detections_at_or_above_the_score_threshold(predictor):
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[2:6, 3:9, 0] = 255          # red: score 0.232
    pixels[10:20, :, 2] = 150          # blue: score 0.6
    everything, blue_only = predictor([encode_png(pixels)] * 2, score_threshold=[0.0, 0.5])
    assert sorted(everything.category_names) == ["blue", "red"]
    assert blue_only.category_names == ["blue"] and blue_only.masks.shape == (1, 20, 30)
    k = everything.category_names.index("blue")
    np.testing.assert_array_equal(blue_only.masks[0], everything.masks[k])
    assert blue_only.scores[0] == everything.scores[k]


def test_empty_result_is_an_empty_list(client):
    reply = client.post("/predict", json={"img_id": "x", "img_data": b64(encode_png(np.zeros((8, 8, 3), np.uint8)))})
    assert reply.json() == {"annotations": []}


def test_openapi_documents_the_contract(client):
    spec = client.get("/openapi.json").json()
    for path in PREDICT_PATHS:
        op = spec["paths"][path]["post"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert {"img_id", "img_data"} <= set(schema["required"])
        assert {"200", "400", "413", "415", "422", "503"} <= set(op["responses"])


def test_line_wrapped_base64_is_accepted(client):
    import base64

    wrapped = base64.encodebytes(encode_png(colored_image(30, 30, 5))).decode()     # MIME: a newline every 76 chars
    plain = b64(encode_png(colored_image(30, 30, 5)))
    assert "\n" in wrapped
    replies = [client.post("/predict", json={"img_id": "a", "img_data": data}) for data in (wrapped, plain)]
    assert replies[0].status_code == 200 and replies[0].content == replies[1].content
