"""Per-image and per-instance checks of the converter: what is kept, fixed, or skipped, and why.

Decisions (each is a stable ``reason`` key of the manifest's report):

* Image files. ``missing_file``, ``unreadable_image`` (not an image, or damaged), ``truncated_image``
  and ``size_mismatch`` (pixels differ from the annotation's width/height, so the polygons would
  not fit) skip the whole image. A readable image that is not an RGB JPEG (``grayscale``,
  ``cmyk``, ``not_jpeg`` such as a PNG named ``.jpg``, ``other_mode`` such as palette or RGBA) is
  re-encoded to an RGB JPEG and kept: COCO itself has a few hundred grayscale JPEGs that training
  should not lose, and afterwards every record decodes with ``tf.io.decode_jpeg(channels=3)``.
* Instances. ``unknown_category``, ``bad_box`` (not 4 finite numbers), ``zero_size_box``,
  ``box_outside_image`` (nothing left after clipping to the image), ``degenerate_polygon`` (no
  polygon with >= 3 points, or zero area), ``bad_rle`` and ``missing_segmentation`` drop only that
  instance. A box that sticks out of the image is clipped and kept.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

REENCODE_QUALITY = 95
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


class BadItem(Exception):
    """An image or instance that cannot be used: ``reason`` (report key) and ``detail`` (one line)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CheckedImage:
    encoded: bytes             # RGB JPEG bytes: the original file, or a re-encoding
    fix: str | None            # report key when re-encoded
    fix_detail: str | None


def check_image(data: bytes, width: int, height: int) -> CheckedImage:
    """Verify that ``data`` decodes fully to ``width`` x ``height`` pixels; re-encode if not RGB JPEG.

    The full decode (at 1/8 scale for JPEG, which still reads every entropy-coded byte) is what
    catches truncated and damaged files before they reach training.
    """
    try:
        image = Image.open(io.BytesIO(data))
        fmt, mode, size = image.format, image.mode, image.size
        is_rgb_jpeg = fmt == "JPEG" and mode == "RGB"
        if is_rgb_jpeg:
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except OSError as e:
        text = str(e)
        if "truncated" in text:
            raise BadItem("truncated_image", f"image data ends early ({text})") from None
        raise BadItem("unreadable_image", f"cannot decode image ({text})") from None
    except (ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise BadItem("unreadable_image", f"cannot decode image ({e})") from None
    if size != (width, height):
        raise BadItem("size_mismatch", f"image is {size[0]}x{size[1]} but the annotation says {width}x{height}")
    if is_rgb_jpeg:
        return CheckedImage(data, None, None)
    fix = "not_jpeg" if fmt != "JPEG" else "cmyk" if mode == "CMYK" else "grayscale" if mode in _GRAY_MODES else "other_mode"
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=REENCODE_QUALITY)
    return CheckedImage(out.getvalue(), fix, f"{fmt} {mode} re-encoded as RGB JPEG")


@dataclass(frozen=True)
class Instance:
    """A usable instance. ``box``: ``[x1, y1, x2, y2]`` pixels, clipped to the image."""

    category_id: int
    box: tuple[float, float, float, float]
    is_crowd: bool
    area: float
    mask: np.ndarray            # uint8 [H, W] in {0, 1}


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def check_box(bbox, width: int, height: int) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` clipped to the image, or BadItem."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not _finite(bbox):
        raise BadItem("bad_box", f"bbox {bbox!r:.60} is not 4 finite numbers")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise BadItem("zero_size_box", f"bbox {bbox!r} has no area")
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise BadItem("box_outside_image", f"bbox {bbox!r} lies outside the {width}x{height} image")
    return x1, y1, x2, y2


def segmentation_rle(segmentation, width: int, height: int) -> dict:
    """pycocotools RLE of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE), or BadItem.

    Polygons with fewer than 3 points are dropped first: pycocotools would read a 4-number list as
    a box, not a polygon.
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation
                    if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and _finite(p)]
        if not polygons:
            raise BadItem("degenerate_polygon", "no polygon with at least 3 points")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != [height, width]:
            raise BadItem("bad_rle", f"RLE size {segmentation.get('size')!r} is not the image's [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise BadItem("bad_rle", f"RLE counts do not cover the {width}x{height} image")
            return mask_utils.frPyObjects(segmentation, height, width)
        if isinstance(counts, (str, bytes)):
            return {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
        raise BadItem("bad_rle", "RLE counts are neither a list nor a string")
    raise BadItem("missing_segmentation", "annotation has no polygon or RLE segmentation")


def check_instance(ann: dict, width: int, height: int, class_map: dict[int, tuple[int, str]]) -> Instance:
    """A usable instance from a COCO annotation, or BadItem naming the problem."""
    category_id = ann.get("category_id")
    if not isinstance(category_id, int) or category_id not in class_map:
        raise BadItem("unknown_category", f"category id {category_id!r} is not in 'categories'")
    box = check_box(ann.get("bbox"), width, height)
    try:
        rle = segmentation_rle(ann.get("segmentation"), width, height)
        mask_area = float(mask_utils.area(rle))
        if mask_area == 0:
            raise BadItem("degenerate_polygon", "segmentation has zero area")
        mask = mask_utils.decode(rle)
    except BadItem:
        raise
    except Exception as e:            # pycocotools raises bare Exceptions on malformed input
        raise BadItem("bad_rle", f"segmentation cannot be decoded ({e})") from None
    area = ann.get("area")
    return Instance(category_id, box, bool(ann.get("iscrowd", 0)),
                    float(area) if _finite([area]) and area > 0 else mask_area, mask)
