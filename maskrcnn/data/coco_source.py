"""Reading a COCO-format annotation file into per-image work items, with its problems listed.

One pass in the parent process: check the file's structure, build the class map, drop duplicate
image ids and annotations of unknown images, and group annotations per image. Per-image and
per-instance checks that need the image or its size run later, in the workers (``validate.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from maskrcnn.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one image or one annotation: ``reason`` is a stable key of the report."""

    reason: str
    image_id: int | None
    file_name: str | None
    detail: str
    annotation_id: int | None = None

    def report_entry(self) -> dict:
        entry = {"image_id": self.image_id}
        if self.annotation_id is not None:
            entry["annotation_id"] = self.annotation_id
        else:
            entry["file_name"] = self.file_name
        entry["detail"] = self.detail
        return entry


@dataclass
class CocoSource:
    """A parsed annotation file.

    ``images``: image records (``id``, ``file_name``, ``width``, ``height``) sorted by id, each with
    its annotations in ``annotations[id]`` (file order). ``class_map``: ``{coco_category_id:
    (contiguous_id, name)}`` with contiguous ids ``1..K`` in category-id order.
    """

    path: Path
    sha256: str
    num_input_images: int
    images: list[dict]
    annotations: dict[int, list[dict]]
    class_map: dict[int, tuple[int, str]]
    skipped_images: list[Problem] = field(default_factory=list)
    skipped_instances: list[Problem] = field(default_factory=list)


def _load_json(path: Path) -> tuple[dict, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: annotation file not found; check --coco-dir/--split or --annotations") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory; --annotations takes a COCO-format JSON file") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise UserError(f"{path}: malformed JSON{where}; the file is damaged or not a COCO annotation file") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("images"), list) \
            or not isinstance(parsed.get("categories"), list):
        raise UserError(f"{path}: not a COCO annotation file (needs 'images' and 'categories' lists)")
    if not isinstance(parsed.get("annotations", []), list):
        raise UserError(f"{path}: 'annotations' must be a list")
    return parsed, digest


def _class_map(path: Path, categories: list) -> dict[int, tuple[int, str]]:
    seen: dict[int, str] = {}
    for cat in categories:
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise UserError(f"{path}: bad category entry {cat!r} (needs integer 'id' and string 'name')")
        if cat["id"] in seen:
            raise UserError(f"{path}: category id {cat['id']} appears twice ({seen[cat['id']]!r}, {cat['name']!r})")
        seen[cat["id"]] = cat["name"]
    if not seen:
        raise UserError(f"{path}: no categories")
    return {cid: (i + 1, seen[cid]) for i, cid in enumerate(sorted(seen))}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _image_problem(image) -> str | None:
    if not isinstance(image, dict):
        return f"image entry is not an object: {image!r:.80}"
    if not _is_int(image.get("id")):
        return f"image entry without an integer 'id': {image.get('id')!r:.40}"
    if not isinstance(image.get("file_name"), str) or not image["file_name"]:
        return "image entry without a 'file_name'"
    for key in ("width", "height"):
        if not _is_int(image.get(key)) or image[key] <= 0:
            return f"image {key} {image.get(key)!r} is not a positive integer"
    return None


def load_coco(path: str | Path) -> CocoSource:
    """Parse and group ``path``; raises UserError when the file as a whole is unusable."""
    path = Path(path)
    data, digest = _load_json(path)
    class_map = _class_map(path, data["categories"])
    source = CocoSource(path=path, sha256=digest, num_input_images=len(data["images"]),
                        images=[], annotations={}, class_map=class_map)

    by_id: dict[int, dict] = {}
    for image in data["images"]:
        problem = _image_problem(image)
        image_id = image.get("id") if isinstance(image, dict) and _is_int(image.get("id")) else None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if problem:
            source.skipped_images.append(Problem("bad_image_record", image_id, file_name, problem))
        elif image["id"] in by_id:
            first = by_id[image["id"]]["file_name"]
            source.skipped_images.append(Problem(
                "duplicate_image_id", image_id, file_name, f"image id {image_id} already used by {first}"))
        else:
            by_id[image["id"]] = image

    grouped: dict[int, list[dict]] = defaultdict(list)
    for ann in data.get("annotations", []):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if isinstance(image_id, int) and image_id in by_id:
            grouped[image_id].append(ann)
        else:
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            source.skipped_instances.append(Problem(
                "unknown_image_id", image_id if _is_int(image_id) else None, None,
                f"annotation refers to image id {image_id!r}, which is not in 'images'", ann_id))
    source.images = [by_id[i] for i in sorted(by_id)]
    source.annotations = dict(grouped)
    logger.info("%s: %d images, %d annotations, %d categories", path, len(source.images),
                sum(len(v) for v in grouped.values()), len(class_map))
    return source
