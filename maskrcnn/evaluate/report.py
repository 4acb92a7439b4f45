"""The evaluation report: ``report.md`` and a self-contained ``report.html`` (images inlined, so a
Kubeflow UI can show it as one HTML artifact)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from maskrcnn.evaluate.cocoeval import STAT_NAMES
from maskrcnn.utils.io import atomic_write

STAT_TITLES = {
    "AP": "AP @[.50:.95]", "AP50": "AP @.50", "AP75": "AP @.75", "APs": "AP small", "APm": "AP medium",
    "APl": "AP large", "AR1": "AR 1 det", "AR10": "AR 10 dets", "AR100": "AR 100 dets", "ARs": "AR small",
    "ARm": "AR medium", "ARl": "AR large",
}


def _fmt(value: float) -> str:
    return "n/a" if value is None or value < 0 else f"{value:.3f}"


def _tables(metrics: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` for the summary and per-class tables."""
    summary = [[STAT_TITLES[n], _fmt(metrics["bbox"][n]), _fmt(metrics["segm"][n])] for n in STAT_NAMES]
    per_class = [[name, _fmt(v["bbox"]), _fmt(v["segm"])] for name, v in sorted(metrics["per_class"].items())]
    return [
        ("COCO summary", ["metric", "bbox", "segm"], summary),
        ("AP @[.50:.95] per class", ["class", "bbox", "segm"], per_class),
    ]


def _facts(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("model", str(metrics["model_id"])), ("images", str(metrics["num_images"])),
            ("detections", str(metrics.get("num_detections", "n/a")))]


def write_markdown(path: Path, metrics: Mapping[str, Any], samples: Sequence[Path], loss_curve: Path | None) -> None:
    lines = ["# Mask R-CNN evaluation", ""]
    lines += [f"- {k}: `{v}`" for k, v in _facts(metrics)] + [""]
    for title, header, rows in _tables(metrics):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    if loss_curve is not None:
        lines += ["## Training loss", "", f"![loss curve]({loss_curve.relative_to(path.parent).as_posix()})", ""]
    if samples:
        lines += ["## Ground truth | predictions (score >= 0.5, else the 3 best)", ""]
        lines += [f"![{p.stem}]({p.relative_to(path.parent).as_posix()})" for p in samples] + [""]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines))


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html(path: Path, metrics: Mapping[str, Any], samples: Sequence[Path], loss_curve: Path | None) -> None:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Mask R-CNN evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;margin:4px;border:1px solid #ddd}</style></head><body>",
        "<h1>Mask R-CNN evaluation</h1><ul>",
    ]
    parts += [f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in _facts(metrics)] + ["</ul>"]
    for title, header, rows in _tables(metrics):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    if loss_curve is not None:
        parts += ["<h2>Training loss</h2>", _img_tag(loss_curve, "loss curve")]
    if samples:
        parts += ["<h2>Ground truth | predictions (score &ge; 0.5, else the 3 best)</h2><div>"] + [_img_tag(p, p.stem) for p in samples] + ["</div>"]
    parts.append("</body></html>")
    with atomic_write(path, "w") as f:
        f.write("\n".join(parts))
