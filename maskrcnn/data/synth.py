"""A generated dataset in the COCO 2017 layout: shapes on textured backgrounds.

COCO cannot be downloaded everywhere (CI, laptops, this project's tests), so the local pipeline and
the tests train and evaluate on this instead. It exercises what real COCO throws at a converter and
a model: several classes with non-contiguous category ids, polygon masks (multi-part when an object
is cut by another one), occlusion, objects cut by the image border, ``iscrowd=1`` regions stored as
uncompressed RLE, and varied image sizes.

Classes differ by shape only (colours are random), so a small model can learn them. Each object's
annotation is its *visible* region: its polygon minus every object painted after it, clipped to the
image; areas and boxes come from pycocotools' rasterization of those polygons, as in COCO.

Output is byte-identical for a seed (each image has its own random stream, so image ``i`` does not
depend on how many images are generated). The annotation file is written last, atomically: a split
whose ``annotations/instances_{split}.json`` exists is complete.
"""

from __future__ import annotations

import colorsys
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import shapely
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from shapely.geometry import MultiPolygon, Polygon, box as shapely_box
from tqdm import tqdm

from maskrcnn.errors import UserError
from maskrcnn.utils.io import atomic_write

logger = logging.getLogger(__name__)

# Non-contiguous ids on purpose (COCO's 80 classes use ids 1..90): the converter must map them.
CATEGORIES: tuple[dict, ...] = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
    {"id": 12, "name": "star", "supercategory": "shape"},
    {"id": 18, "name": "cross", "supercategory": "shape"},
)
SPLITS = ("train2017", "val2017")
JPEG_QUALITY = 90
# Image ids of the two splits never collide (as in COCO).
_FIRST_IMAGE_ID = {"train2017": 1, "val2017": 1_000_001}
_SPLIT_STREAM = {"train2017": 0, "val2017": 1}


@dataclass(frozen=True)
class Recipe:
    """How images are drawn. Sizes are fractions of the image's short side."""

    min_side: int = 160
    max_side: int = 320
    image_size: tuple[int, int] | None = None   # fixed (height, width) instead of random sides
    max_objects: int = 6
    object_size: tuple[float, float] = (0.20, 0.45)   # circumscribed diameter
    min_visible: float = 0.4          # fraction of an object that must stay visible (occlusion, border)
    crowd_prob: float = 0.15          # images that get one iscrowd region
    crowd_members: tuple[int, int] = (5, 9)
    crowd_member_size: tuple[float, float] = (0.06, 0.11)


# ----------------------------------------------------------------------------- geometry


def shape_outline(kind: str, radius: float) -> np.ndarray:
    """Vertices ``[K, 2]`` (x, y) of a shape centred at 0 with circumradius ``radius``."""
    if kind == "circle":
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if kind == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if kind == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if kind == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if kind == "cross":
        a, r = radius * 0.3, radius * 0.95
        return np.array(
            [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
        )
    raise ValueError(f"unknown shape {kind!r}")


def place(outline: np.ndarray, center: tuple[float, float], angle: float) -> Polygon:
    """The outline rotated by ``angle`` (radians) and moved to ``center`` (x, y)."""
    c, s = np.cos(angle), np.sin(angle)
    points = outline @ np.array([[c, s], [-s, c]]) + np.asarray(center)
    return Polygon(points)


def visible_regions(shapes: Sequence[Polygon], frame: Polygon) -> list:
    """Per shape (in painting order), the part not covered by later shapes, clipped to ``frame``."""
    regions = []
    for i, shape in enumerate(shapes):
        region = shape.intersection(frame)
        later = shapely.union_all(shapes[i + 1:]) if i + 1 < len(shapes) else None
        if later is not None and not later.is_empty:
            region = region.difference(later)
        regions.append(region)
    return regions


def _parts(geometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    if isinstance(geometry, MultiPolygon):
        return [p for p in geometry.geoms if not p.is_empty]
    # GeometryCollection (touching shapes): keep its polygonal parts.
    return [p for g in getattr(geometry, "geoms", []) for p in _parts(g)]


def is_polygon_annotatable(region, min_area: float) -> bool:
    """COCO polygons cannot have holes, and slivers teach nothing: require neither."""
    parts = _parts(region)
    return bool(parts) and all(not p.interiors and p.area >= min_area for p in parts)


def coco_polygons(region) -> list[list[float]]:
    """COCO ``segmentation`` polygons ``[[x1, y1, x2, y2, ...], ...]`` of a hole-free region."""
    polygons = []
    for part in _parts(region):
        coords = np.asarray(part.exterior.coords)[:-1]     # shapely repeats the first vertex
        polygons.append([round(float(v), 2) for v in coords.reshape(-1)])
    return polygons


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd RLE: ``{"counts": [runs...], "size": [h, w]}``, column-major, starting with 0s."""
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {"counts": runs, "size": [int(mask.shape[0]), int(mask.shape[1])]}


# ----------------------------------------------------------------------------- sampling


@dataclass
class _Object:
    category_id: int
    shape: Polygon           # the full drawn shape (may extend past the border)
    color: tuple[int, int, int]
    members: tuple[Polygon, ...] = ()   # a crowd's shapes, drawn one by one (their union may have holes)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.5, 1.0)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def _sample_objects(rng: np.random.Generator, width: int, height: int, recipe: Recipe) -> list[_Object]:
    """Objects in painting order; each keeps at least ``min_visible`` of itself visible."""
    short = min(width, height)
    frame = shapely_box(0, 0, width, height)
    kinds = {c["id"]: c["name"] for c in CATEGORIES}
    objects: list[_Object] = []
    target = int(rng.integers(1, recipe.max_objects + 1))
    for _ in range(target * 8):                      # rejection sampling, bounded
        if len(objects) == target:
            break
        category_id = int(rng.choice(list(kinds)))
        radius = 0.5 * short * rng.uniform(*recipe.object_size)
        margin = 0.15 * radius                       # lets some objects cross the border
        center = (rng.uniform(-margin, width + margin), rng.uniform(-margin, height + margin))
        candidate = _Object(category_id, place(shape_outline(kinds[category_id], radius), center,
                                               rng.uniform(0, 2 * np.pi)), _random_color(rng))
        trial = objects + [candidate]
        regions = visible_regions([o.shape for o in trial], frame)
        min_area = 0.02 * short * short
        if all(
            region.area >= recipe.min_visible * obj.shape.area and is_polygon_annotatable(region, min_area)
            for obj, region in zip(trial, regions)
        ):
            objects = trial
    return objects


def _sample_crowd(rng: np.random.Generator, width: int, height: int, recipe: Recipe) -> _Object | None:
    """A cluster of small same-class shapes, annotated as one ``iscrowd`` region."""
    if rng.uniform() >= recipe.crowd_prob:
        return None
    short = min(width, height)
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    cx, cy = rng.uniform(0.25 * width, 0.75 * width), rng.uniform(0.25 * height, 0.75 * height)
    members = []
    for _ in range(int(rng.integers(*recipe.crowd_members))):
        radius = 0.5 * short * rng.uniform(*recipe.crowd_member_size)
        offset = rng.normal(0, 0.12 * short, size=2)
        members.append(place(shape_outline(category["name"], radius), (cx + offset[0], cy + offset[1]),
                             rng.uniform(0, 2 * np.pi)))
    return _Object(category["id"], shapely.union_all(members), _random_color(rng), tuple(members))


# ----------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth low-saturation colour blobs plus fine noise, uint8 ``[H, W, 3]``."""
    cells = rng.uniform(50, 200, size=(int(rng.integers(3, 8)), int(rng.integers(3, 8)), 1))
    tint = rng.uniform(-25, 25, size=(1, 1, 3))
    low = np.clip(cells + tint, 0, 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 12, size=smooth.shape), 0, 255).astype(np.uint8)


def _draw(image: Image.Image, obj: _Object) -> None:
    draw = ImageDraw.Draw(image)
    for part in obj.members or (obj.shape,):
        draw.polygon([tuple(p) for p in np.asarray(part.exterior.coords)], fill=obj.color)


def _render(rng: np.random.Generator, width: int, height: int, layers: Sequence[_Object]) -> Image.Image:
    image = Image.fromarray(_background(rng, width, height))
    for obj in layers:
        _draw(image, obj)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- annotations


def _annotation(region, obj: _Object, *, crowd: bool, image_id: int, ann_id: int, height: int, width: int) -> dict | None:
    polygons = coco_polygons(region)
    if not polygons:
        return None
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    area = float(mask_utils.area(rle))
    if area < 1:
        return None
    if crowd:
        segmentation = uncompressed_rle(mask_utils.decode(rle))
    else:
        segmentation = polygons
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": obj.category_id,
        "segmentation": segmentation,
        "area": area,
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": int(crowd),
    }


def make_image(seed: int, split: str, index: int, recipe: Recipe) -> tuple[Image.Image, list[dict]]:
    """Image ``index`` of ``split`` and its annotations (``id``/``image_id`` filled in by the caller)."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split], index])
    if recipe.image_size:
        height, width = recipe.image_size
    else:
        width, height = (int(v) for v in rng.integers(recipe.min_side, recipe.max_side + 1, size=2))
    crowd = _sample_crowd(rng, width, height, recipe)
    objects = _sample_objects(rng, width, height, recipe)
    layers = ([crowd] if crowd else []) + objects
    regions = visible_regions([o.shape for o in layers], shapely_box(0, 0, width, height))
    annotations = []
    for obj, region in zip(layers, regions):
        ann = _annotation(region, obj, crowd=obj is crowd, image_id=0, ann_id=0, height=height, width=width)
        if ann is not None:
            annotations.append(ann)
    return _render(rng, width, height, layers), annotations


def _info() -> dict:
    return {
        "description": "maskrcnn-kubeflow generated shapes (maskrcnn data synth)",
        "url": "",
        "version": "1.0",
        "year": 2017,
        "contributor": "maskrcnn-kubeflow",
        "date_created": "2017/09/01",
    }


def generate_split(out_dir: Path, split: str, count: int, *, seed: int, recipe: Recipe) -> Path:
    """Write ``{split}/*.jpg`` and ``annotations/instances_{split}.json``; returns the JSON path."""
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(count), desc=f"synth {split}", unit="img", disable=None):
        image_id = _FIRST_IMAGE_ID[split] + index
        file_name = f"{image_id:012d}.jpg"
        image, anns = make_image(seed, split, index, recipe)
        # Pillow with fixed settings writes identical bytes for identical pixels.
        image.save(image_dir / file_name, format="JPEG", quality=JPEG_QUALITY, subsampling=2)
        images.append({
            "id": image_id, "file_name": file_name, "width": image.width, "height": image.height,
            "license": 1, "coco_url": "", "flickr_url": "", "date_captured": "2017-09-01 00:00:00",
        })
        for ann in anns:
            ann["id"] = _FIRST_IMAGE_ID[split] * 100 + len(annotations)
            ann["image_id"] = image_id
            annotations.append(ann)
    dataset = {
        "info": _info(),
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }
    path = out_dir / "annotations" / f"instances_{split}.json"
    with atomic_write(path, "w") as f:
        json.dump(dataset, f, separators=(",", ":"))
    logger.info("wrote %s: %d images, %d annotations", path, len(images), len(annotations))
    return path


def generate(
    out_dir: str | Path,
    *,
    train: int = 256,
    val: int = 64,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
) -> Path:
    """Generate the COCO dir ``out_dir`` (train2017 and val2017) and return its path.

    ``image_size``: fixed ``(height, width)`` for every image (benchmarks); default random sides in
    [160, 320] px so tests and the local pipeline stay fast.
    """
    if train < 0 or val < 0:
        raise UserError(f"synth: image counts must be >= 0 (got train={train}, val={val})")
    if image_size is not None and min(image_size) < 32:
        raise UserError(f"synth: image size {image_size} is too small; use at least 32x32")
    out_dir = Path(out_dir)
    recipe = Recipe(image_size=tuple(image_size) if image_size else None)
    for split, count in (("train2017", train), ("val2017", val)):
        generate_split(out_dir, split, count, seed=seed, recipe=recipe)
    return out_dir
