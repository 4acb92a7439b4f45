"""The deploy gate: should a newly evaluated model replace the one being served?

Pure (no Kubernetes import, no I/O besides ``read_candidate``), so ``maskrcnn k8s deploy`` and the
local pipeline's deploy step decide alike. A model is deployed only when its box AP and mask AP
(COCO AP@[.50:.95], fractions in [0, 1] as ``metrics.json`` records them) reach the thresholds and
neither is worse than the deployed model's (recorded on the serving Deployment's annotations).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Mapping

from maskrcnn.errors import UserError
from maskrcnn.utils.io import read_json

# Where the deployed model's facts are recorded (annotations of the serving Deployment).
ANNOTATION_BOX_AP = "maskrcnn.kubeflow.org/box-ap"
ANNOTATION_MASK_AP = "maskrcnn.kubeflow.org/mask-ap"
ANNOTATION_MODEL_URI = "maskrcnn.kubeflow.org/model-uri"
ANNOTATION_MODEL_ID = "maskrcnn.kubeflow.org/model-id"


@dataclass(frozen=True)
class ModelScore:
    """A model's identity and its COCO AP@[.50:.95] for boxes and masks (fractions in [0, 1])."""

    box_ap: float
    mask_ap: float
    model_id: str = ""
    model_uri: str = ""

    def annotations(self) -> dict[str, str]:
        """The Deployment annotations that record this model as deployed."""
        return {ANNOTATION_BOX_AP: f"{self.box_ap:.6f}", ANNOTATION_MASK_AP: f"{self.mask_ap:.6f}",
                ANNOTATION_MODEL_URI: self.model_uri, ANNOTATION_MODEL_ID: self.model_id}


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    required: float
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    deploy: bool
    reason: str
    candidate: ModelScore
    deployed: ModelScore | None
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def scores_from_metrics(metrics: Mapping, model_uri: str = "") -> ModelScore:
    """``ModelScore`` from a ``metrics.json`` dict (``bbox.AP``, ``segm.AP``, ``model_id``)."""
    try:
        box_ap, mask_ap = float(metrics["bbox"]["AP"]), float(metrics["segm"]["AP"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"metrics have no usable bbox.AP and segm.AP ({e!r}): pass the metrics.json that "
                        "`maskrcnn evaluate` wrote") from None
    for name, value in (("bbox.AP", box_ap), ("segm.AP", mask_ap)):
        if not 0.0 <= value <= 1.0 and value != -1.0:
            raise UserError(f"metrics {name} = {value} is not a fraction in [0, 1]: pass the metrics.json that "
                            "`maskrcnn evaluate` wrote")
    return ModelScore(box_ap=box_ap, mask_ap=mask_ap, model_id=str(metrics.get("model_id", "")), model_uri=model_uri)


def read_candidate(metrics_path: str | os.PathLike, model_uri: str = "") -> ModelScore:
    """The candidate model's scores from its ``metrics.json``."""
    try:
        metrics = read_json(metrics_path)
    except FileNotFoundError:
        raise UserError(f"metrics file {metrics_path} does not exist: pass the metrics.json of the evaluation") from None
    except ValueError as e:
        raise UserError(f"metrics file {metrics_path} is not valid JSON ({e}): pass the metrics.json of the "
                        "evaluation") from None
    return scores_from_metrics(metrics, model_uri)


def deployed_from_annotations(annotations: Mapping[str, str] | None) -> ModelScore | None:
    """The deployed model recorded on a serving Deployment, or None (nothing recorded, or unreadable)."""
    annotations = annotations or {}
    try:
        return ModelScore(
            box_ap=float(annotations[ANNOTATION_BOX_AP]),
            mask_ap=float(annotations[ANNOTATION_MASK_AP]),
            model_id=annotations.get(ANNOTATION_MODEL_ID, ""),
            model_uri=annotations.get(ANNOTATION_MODEL_URI, ""),
        )
    except (KeyError, ValueError):
        return None


def check_thresholds(min_box_ap: float, min_mask_ap: float) -> None:
    for name, value in (("min box AP", min_box_ap), ("min mask AP", min_mask_ap)):
        if not (0.0 <= value <= 1.0) or math.isnan(value):
            raise UserError(f"{name} {value} must be a fraction in [0, 1] (COCO AP as metrics.json records it), "
                            "e.g. 0.30 for 30 AP")


def decide(candidate: ModelScore, *, min_box_ap: float, min_mask_ap: float,
           deployed: ModelScore | None = None) -> GateDecision:
    """Deploy when both APs reach their thresholds and neither is below the deployed model's."""
    check_thresholds(min_box_ap, min_mask_ap)
    checks = [
        Check("box AP >= threshold", candidate.box_ap, min_box_ap, candidate.box_ap >= min_box_ap),
        Check("mask AP >= threshold", candidate.mask_ap, min_mask_ap, candidate.mask_ap >= min_mask_ap),
    ]
    if deployed is not None:
        checks += [
            Check("box AP >= deployed", candidate.box_ap, deployed.box_ap, candidate.box_ap >= deployed.box_ap),
            Check("mask AP >= deployed", candidate.mask_ap, deployed.mask_ap, candidate.mask_ap >= deployed.mask_ap),
        ]
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "not deployed: " + "; ".join(f"{c.name.split(' >=')[0]} {c.value:.4f} < {c.required:.4f} "
                                              f"({'deployed model' if 'deployed' in c.name else 'threshold'})"
                                              for c in failed)
    elif deployed is None:
        reason = (f"deploy: box AP {candidate.box_ap:.4f} >= {min_box_ap:.4f} and mask AP {candidate.mask_ap:.4f} >= "
                  f"{min_mask_ap:.4f}; no model deployed yet")
    else:
        reason = (f"deploy: box AP {candidate.box_ap:.4f} and mask AP {candidate.mask_ap:.4f} reach the thresholds and "
                  f"are not worse than the deployed model's ({deployed.box_ap:.4f}, {deployed.mask_ap:.4f})")
    return GateDecision(deploy=not failed, reason=reason, candidate=candidate, deployed=deployed, checks=checks)
