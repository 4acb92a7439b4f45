"""Plain NumPy reference implementations (loops, no TensorFlow) that the model's ops are checked against."""

from __future__ import annotations

import math

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, 4] x [M, 4] y1x1y2x2 → [N, M], one pair at a time."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = ih * iw
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Greedy NMS: indices kept, best first; a box is dropped when IoU > thresh with a kept one."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou(boxes[i : i + 1], boxes[k : k + 1])[0, 0] <= thresh for k in keep):
            keep.append(int(i))
    return keep


def _interp(grid: np.ndarray, y: float, x: float) -> float:
    """Bilinear value at pixel-index coordinates, neighbours outside the grid count as 0."""
    h, w = grid.shape
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * grid[yy, xx]
    return total


def _roi_align_point(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """Detectron2 / torchvision ROIAlign bilinear rule for one point of an [H, W, C] map."""
    h, w, _ = feature.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(feature.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return (
        (1 - ly) * (1 - lx) * feature[y_low, x_low]
        + (1 - ly) * lx * feature[y_low, x_high]
        + ly * (1 - lx) * feature[y_high, x_low]
        + ly * lx * feature[y_high, x_high]
    )


def roi_align(feature: np.ndarray, box: np.ndarray, stride: float, out: int, ratio: int) -> np.ndarray:
    """ROIAlign (aligned=True) of one box (image pixels) on one [H, W, C] map → [out, out, C]."""
    y1, x1, y2, x2 = np.asarray(box, np.float64) / stride
    bin_h, bin_w = (y2 - y1) / out, (x2 - x1) / out
    result = np.zeros((out, out, feature.shape[-1]))
    for i in range(out):
        for j in range(out):
            acc = np.zeros(feature.shape[-1])
            for a in range(ratio):
                for b in range(ratio):
                    y = y1 + (i + (a + 0.5) / ratio) * bin_h - 0.5
                    x = x1 + (j + (b + 0.5) / ratio) * bin_w - 0.5
                    acc += _roi_align_point(feature, y, x)
            result[i, j] = acc / ratio**2
    return result


def fpn_level(box: np.ndarray) -> int:
    area = (box[2] - box[0]) * (box[3] - box[1])
    return int(min(5, max(2, math.floor(4 + math.log2(math.sqrt(area) / 224 + 1e-6)))))


def paste_mask(mask: np.ndarray, box: np.ndarray, height: int, width: int) -> np.ndarray:
    """Each image pixel centre sampled from the box-relative mask (zero outside it)."""
    m = mask.shape[0]
    y1, x1, y2, x2 = box
    out = np.zeros((height, width))
    for r in range(height):
        for c in range(width):
            u = ((r + 0.5) - y1) / (y2 - y1) * m - 0.5
            v = ((c + 0.5) - x1) / (x2 - x1) * m - 0.5
            out[r, c] = _interp(mask, u, v)
    return out


def crop_mask(gt_mask: np.ndarray, gt_box: np.ndarray, roi: np.ndarray, size: int) -> np.ndarray:
    """Target for one ROI: the gt mask (covering gt_box) sampled at the ROI's bin centres, >= 0.5."""
    s = gt_mask.shape[0]
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            y = roi[0] + (i + 0.5) * (roi[2] - roi[0]) / size
            x = roi[1] + (j + 0.5) * (roi[3] - roi[1]) / size
            u = (y - gt_box[0]) / (gt_box[2] - gt_box[0]) * s - 0.5
            v = (x - gt_box[1]) / (gt_box[3] - gt_box[1]) * s - 0.5
            out[i, j] = _interp(gt_mask, u, v) >= 0.5
    return out
