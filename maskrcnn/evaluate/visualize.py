"""Pictures of detections (boxes, masks, labels) and of a loss curve, drawn with Pillow.

``render_detections`` follows the SageMaker notebook's ``show_detection_results``: one colour per
instance from evenly spaced hues in a shuffled order, the mask blended at alpha 0.5, the box
outlined and labelled ``name:id``. Used by the evaluation report and by ``maskrcnn predict``.
"""

from __future__ import annotations

import colorsys
import random
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def instance_colors(n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours (hues evenly spaced, order shuffled reproducibly)."""
    colors = [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 1.0, 0.9)) for i in range(n)]
    random.Random(seed).shuffle(colors)
    return colors


def render_detections(
    image: np.ndarray,
    boxes_xywh: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[str],
    alpha: float = 0.5,
) -> Image.Image:
    """Draw instances on an image.

    image: uint8 ``[H, W, 3]`` RGB. boxes_xywh: ``[n, 4]`` ``[x, y, width, height]`` pixels.
    masks: ``[n, H, W]`` binary. labels: ``n`` strings drawn at the boxes' top-left corners.
    """
    canvas = np.asarray(image, dtype=np.float32).copy()
    colors = instance_colors(len(labels))
    for mask, color in zip(masks, colors):
        on = np.asarray(mask, dtype=bool)
        canvas[on] = canvas[on] * (1 - alpha) + alpha * np.asarray(color, np.float32)
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for (x, y, w, h), label, color in zip(np.asarray(boxes_xywh).reshape(-1, 4), labels, colors):
        draw.rectangle([x, y, x + w, y + h], outline=color, width=2)
        left, top, right, bottom = draw.textbbox((x + 2, y + 2), label, font=font)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(0, 0, 0))
        draw.text((x + 2, y + 2), label, fill=(255, 255, 255), font=font)
    return out


def render_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    size: tuple[int, int] = (720, 360),
) -> Image.Image:
    """A line chart of ``{name: (xs, ys)}`` on shared axes, with a legend and the axis ranges."""
    width, height = size
    left, right, top, bottom = 60, 150, 30, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((left, 8), title, fill="black", font=font)
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if np.isfinite(y)]
    if not points:
        draw.text((left, height // 2), "no data", fill="black", font=font)
        return img
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * plot_w, top + (1 - (y - y0) / (y1 - y0)) * plot_h

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    draw.text((left - 55, top - 5), f"{y1:.3g}", fill="black", font=font)
    draw.text((left - 55, top + plot_h - 5), f"{y0:.3g}", fill="black", font=font)
    draw.text((left, top + plot_h + 5), f"{x0:g}", fill="black", font=font)
    draw.text((left + plot_w - 30, top + plot_h + 5), f"{x1:g}", fill="black", font=font)
    for i, ((name, (xs, ys)), color) in enumerate(zip(series.items(), instance_colors(len(series)))):
        line = [to_px(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=color, width=2)
        draw.line([(width - right + 10, top + 14 * i + 6), (width - right + 30, top + 14 * i + 6)], fill=color, width=3)
        draw.text((width - right + 35, top + 14 * i), name, fill="black", font=font)
    return img
