"""The evaluation report as one self-contained HTML file, and the evaluation summary in Markdown.

KFP's UI shows an HTML artifact in a sandboxed frame with nothing beside it, so the evaluation
report's sample images are inlined as data URIs and the training loss curve is drawn as inline SVG.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

_SRC = re.compile(r"""src=(["'])(?!data:|https?:)([^"']+)\1""")


def inline_images(page: str, base_dir: Path) -> str:
    """Replace ``src="relative/file.png"`` by a data URI of that file (missing files are left as they are)."""

    def replace(match: re.Match) -> str:
        path = base_dir / match.group(2)
        if not path.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:{mime};base64,{data}"'

    return _SRC.sub(replace, page)


def curve_points(loss_curve: Any, key: str = "total_loss") -> list[tuple[float, float]]:
    """``[(step, loss), ...]`` from a ``train_summary.json`` loss curve.

    Accepts a list of ``{"step": s, key: v, ...}`` records, a list of ``[step, loss]`` pairs, or a
    mapping ``{"step": [...], key: [...]}``.
    """
    if isinstance(loss_curve, Mapping):
        return [(float(s), float(v)) for s, v in zip(loss_curve.get("step", ()), loss_curve.get(key, ()))]
    points = []
    for item in loss_curve or ():
        if isinstance(item, Mapping):
            if "step" in item and key in item:
                points.append((float(item["step"]), float(item[key])))
        elif isinstance(item, Sequence) and len(item) >= 2:
            points.append((float(item[0]), float(item[1])))
    return points


def loss_curve_svg(points: Sequence[tuple[float, float]], width: int = 480, height: int = 240) -> str:
    """A line chart of (step, loss) as inline SVG with axis labels; empty string when no points."""
    if not points:
        return ""
    margin = 40
    steps = [p[0] for p in points]
    losses = [p[1] for p in points]
    x0, x1 = min(steps), max(steps) or 1.0
    y0, y1 = 0.0, max(losses) or 1.0
    span_x = (x1 - x0) or 1.0

    def xy(step: float, loss: float) -> str:
        x = margin + (step - x0) / span_x * (width - 2 * margin)
        y = height - margin - (loss - y0) / (y1 - y0) * (height - 2 * margin)
        return f"{x:.1f},{y:.1f}"

    polyline = " ".join(xy(s, v) for s, v in points)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="training loss curve">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>'
        f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{polyline}"/>'
        f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle" font-size="12">step ({x0:g} to {x1:g})</text>'
        f'<text x="12" y="{height / 2}" font-size="12" transform="rotate(-90 12 {height / 2})" '
        f'text-anchor="middle">total loss (0 to {y1:.3g})</text>'
        f"</svg>"
    )


def _rows(metrics: Mapping[str, Any], kinds: Iterable[str] = ("bbox", "segm")) -> list[tuple[str, str, str]]:
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    return [(k, *(f"{metrics.get(kind, {}).get(k, float('nan')):.4f}" for kind in kinds)) for k in keys]


def evaluation_html(eval_dir: Path, metrics: Mapping[str, Any], train_summary: Mapping[str, Any]) -> str:
    """The evaluation's ``report.html`` with its images inlined, plus the loss curve of training."""
    page_path = eval_dir / "report.html"
    page = page_path.read_text() if page_path.is_file() else _fallback_html(metrics)
    page = inline_images(page, eval_dir)
    svg = loss_curve_svg(curve_points(train_summary.get("loss_curve")))
    facts = ", ".join(
        f"{k.replace('_', ' ')} {html.escape(str(train_summary[k]))}"
        for k in ("steps", "global_batch", "world_size", "images_per_second", "wall_seconds")
        if k in train_summary
    )
    section = f'<section id="training"><h2>Training</h2><p>{facts}</p>{svg}</section>'
    return page.replace("</body>", section + "</body>") if "</body>" in page else page + section


def _fallback_html(metrics: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{k}</td><td>{b}</td><td>{s}</td></tr>" for k, b, s in _rows(metrics))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Evaluation</title></head><body>"
        f"<h1>COCO evaluation</h1><table><tr><th>metric</th><th>box</th><th>mask</th></tr>{rows}</table></body></html>"
    )


def evaluation_markdown(metrics: Mapping[str, Any], train_summary: Mapping[str, Any], eval_dir: Path) -> str:
    """A short Markdown summary: the AP table, image count and where the full report is."""
    lines = [
        "# Evaluation",
        "",
        f"{metrics.get('num_images', '?')} images, model `{metrics.get('model_id', '?')}`, "
        f"{train_summary.get('steps', '?')} training steps.",
        "",
        "| metric | box | mask |",
        "| --- | --- | --- |",
        *(f"| {k} | {b} | {s} |" for k, b, s in _rows(metrics)),
        "",
        f"Full report: `{eval_dir / 'report.html'}`; detections: `{eval_dir / 'detections.json'}`.",
    ]
    return "\n".join(lines) + "\n"
