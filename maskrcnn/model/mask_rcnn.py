"""Mask R-CNN: ResNet-FPN backbone → RPN → ROIAlign → box head and mask head.

Training (:meth:`MaskRCNN.compute_losses`) and inference (:meth:`MaskRCNN.detect`) are separate
methods with fixed return types; both run on padded batches of fixed shape, inside ``tf.function``,
and keep box math and losses in float32 under a mixed-precision policy.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from maskrcnn.config import Config, from_dict, to_dict
from maskrcnn.errors import UserError
from maskrcnn.model import box_ops, losses, postprocess, rpn, targets
from maskrcnn.model.anchors import multilevel_anchors
from maskrcnn.model.backbone import resnet_from_config
from maskrcnn.model.fpn import FPN
from maskrcnn.model.heads import BoxHead, MaskHead
from maskrcnn.model.roi_align import multilevel_roi_align

keras = tf.keras

LOSS_KEYS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


class MaskRCNN(keras.Model):
    """Mask R-CNN for images padded to ``cfg.PREPROC.PAD_SIZE``.

    Inputs follow the training batch contract in ``docs/architecture.md``: ``images [B, PH, PW, 3]``
    normalized RGB, ``image_info [B, 5]`` = ``[resized_h, resized_w, scale, original_h, original_w]``.
    """

    def __init__(self, cfg: Config, name: str = "mask_rcnn"):
        super().__init__(name=name)
        if (cfg.FPN.MIN_LEVEL, cfg.FPN.MAX_LEVEL) != (2, 6):
            raise UserError(f"FPN levels {cfg.FPN.MIN_LEVEL}..{cfg.FPN.MAX_LEVEL} are not supported; use FPN.MIN_LEVEL=2 FPN.MAX_LEVEL=6")
        if cfg.MODE_MASK and cfg.MRCNN.MASK_SIZE != 2 * cfg.MRCNN.POOL_SIZE:
            raise UserError(
                f"MRCNN.MASK_SIZE={cfg.MRCNN.MASK_SIZE} must be twice MRCNN.POOL_SIZE={cfg.MRCNN.POOL_SIZE} (one 2x deconv)"
            )
        self.cfg = cfg
        self.backbone = resnet_from_config(cfg.BACKBONE)
        self.fpn = FPN(cfg.FPN.CHANNELS)
        self.rpn_head = rpn.RPNHead(cfg.RPN.HEAD_CHANNELS, len(cfg.RPN.ANCHOR_RATIOS))
        self.box_head = BoxHead(cfg.FRCNN.FC_DIM, cfg.NUM_CLASSES)
        self.mask_head = MaskHead(cfg.MRCNN.NUM_CONVS, cfg.MRCNN.HEAD_DIM, cfg.NUM_CLASSES) if cfg.MODE_MASK else None
        self.anchors: dict[int, np.ndarray] = multilevel_anchors(
            image_size=tuple(cfg.PREPROC.PAD_SIZE),
            min_level=cfg.FPN.MIN_LEVEL,
            max_level=cfg.FPN.MAX_LEVEL,
            sizes=cfg.RPN.ANCHOR_SIZES,
            ratios=cfg.RPN.ANCHOR_RATIOS,
        )

    def get_config(self) -> dict:
        return {"cfg": to_dict(self.cfg), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> "MaskRCNN":
        return cls(from_dict(config["cfg"]), name=config.get("name", "mask_rcnn"))

    # ------------------------------------------------------------------ shared stages

    def build(self, input_shape=None) -> None:
        # Sub-layers create their weights on first use; nothing to create at this level.
        self.built = True

    def build_for_inputs(self) -> "MaskRCNN":
        """Create every weight now (before restoring, loading or broadcasting them).

        Weight shapes do not depend on the image size, so this runs the layers on the smallest
        inputs they accept instead of a full padded image.
        """
        side = 2**self.cfg.FPN.MAX_LEVEL
        features, _, _ = self._features_and_rpn(tf.zeros([1, side, side, 3]), training=False)
        p2 = features[self.cfg.FPN.MIN_LEVEL]
        pool = self.cfg.FRCNN.POOL_SIZE
        self.box_head(tf.zeros([1, 1, pool, pool, p2.shape[-1]], p2.dtype))
        if self.mask_head is not None:
            pool = self.cfg.MRCNN.POOL_SIZE
            self.mask_head(tf.zeros([1, 1, pool, pool, p2.shape[-1]], p2.dtype))
        return self

    def call(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """FPN features ``{"p2": [B, PH / 4, PW / 4, C], ..., "p6": [B, PH / 64, PW / 64, C]}``.

        (String keys: a Keras model's call output must be serializable into a SavedModel.)
        """
        images = tf.cast(images, self.compute_dtype)
        return {f"p{level}": x for level, x in self.fpn(self.backbone(images)).items()}

    def _features_and_rpn(self, images: tf.Tensor, training: bool) -> tuple[dict[int, tf.Tensor], dict, dict]:
        """Features ``{level: [B, H_l, W_l, C]}`` and RPN logits/deltas per level."""
        named = self(images, training=training)
        features = {level: named[f"p{level}"] for level in range(self.cfg.FPN.MIN_LEVEL, self.cfg.FPN.MAX_LEVEL + 1)}
        logits, deltas = self.rpn_head(features)
        return features, logits, deltas

    def _proposals(self, logits, deltas, image_sizes, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        c = self.cfg.RPN
        return rpn.generate_proposals(
            logits,
            deltas,
            self.anchors,
            image_sizes,
            pre_nms_topk=c.TRAIN_PRE_NMS_TOPK if training else c.TEST_PRE_NMS_TOPK,
            post_nms_topk=c.TRAIN_POST_NMS_TOPK if training else c.TEST_POST_NMS_TOPK,
            nms_thresh=c.NMS_THRESH,
            min_size=c.MIN_BOX_SIZE,
        )

    def _mask_logits(self, features, boxes: tf.Tensor) -> tf.Tensor:
        pooled = multilevel_roi_align(features, boxes, self.cfg.MRCNN.POOL_SIZE)
        return self.mask_head(pooled)

    # ------------------------------------------------------------------ training

    def compute_losses(self, batch: Mapping[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        """Scalar float32 losses for a training batch (keys ``LOSS_KEYS`` and ``total_loss``).

        ``batch`` follows the training batch contract: ``images``, ``image_info``, ``gt_boxes``
        ``[B, M, 4]`` (resized pixels), ``gt_classes [B, M]`` (0 = padding), ``gt_masks [B, M, S, S]``.
        """
        image_sizes = tf.cast(batch["image_info"], tf.float32)[:, 0:2]
        gt_boxes = tf.cast(batch["gt_boxes"], tf.float32)
        gt_classes = tf.cast(batch["gt_classes"], tf.int32)
        features, logits, deltas = self._features_and_rpn(batch["images"], training=training)
        result = self._rpn_losses(logits, deltas, gt_boxes, gt_classes > 0, image_sizes)

        proposals, proposal_scores = self._proposals(logits, deltas, image_sizes, training=True)
        c = self.cfg.FRCNN
        sampled = targets.roi_targets(
            proposals,
            tf.math.is_finite(proposal_scores),
            gt_boxes,
            gt_classes,
            num_samples=c.BATCH_PER_IMAGE,
            positive_fraction=c.FG_RATIO,
            fg_thresh=c.FG_THRESH,
            bbox_reg_weights=c.BBOX_REG_WEIGHTS,
        )
        class_logits, box_deltas = self.box_head(multilevel_roi_align(features, sampled.rois, c.POOL_SIZE))
        result["loss_classifier"], result["loss_box_reg"] = losses.box_head_losses(
            class_logits, box_deltas, sampled.classes, sampled.valid, sampled.box_targets
        )
        result["loss_mask"] = (
            self._mask_loss(features, sampled, batch["gt_masks"], gt_boxes) if self.mask_head is not None else tf.constant(0.0)
        )
        result["total_loss"] = tf.add_n([result[k] for k in LOSS_KEYS])
        return result

    def _rpn_losses(self, logits, deltas, gt_boxes, gt_valid, image_sizes) -> dict[str, tf.Tensor]:
        c = self.cfg.RPN
        levels = sorted(self.anchors)
        anchor_targets = targets.rpn_targets(
            np.concatenate([self.anchors[level] for level in levels]),
            gt_boxes,
            gt_valid,
            image_sizes,
            positive_thresh=c.POSITIVE_THRESH,
            negative_thresh=c.NEGATIVE_THRESH,
            num_samples=c.BATCH_PER_IMAGE,
            positive_fraction=c.FG_RATIO,
        )
        # Only the sampled anchors' outputs enter the loss: gather them, [B, S] and [B, S, 4].
        sampled_logits = tf.gather(tf.concat([logits[l] for l in levels], axis=1), anchor_targets.indices, batch_dims=1)
        sampled_deltas = tf.gather(tf.concat([deltas[l] for l in levels], axis=1), anchor_targets.indices, batch_dims=1)
        objectness, box = losses.rpn_losses(
            sampled_logits, sampled_deltas, anchor_targets.positive, anchor_targets.valid, anchor_targets.box_targets
        )
        return {"loss_objectness": objectness, "loss_rpn_box_reg": box}

    def _mask_loss(self, features, sampled: targets.ROITargets, gt_masks: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
        # Positives occupy the first slots of the sample, so the mask head only sees those slots.
        num_fg = int(self.cfg.FRCNN.BATCH_PER_IMAGE * self.cfg.FRCNN.FG_RATIO)
        fg_rois = sampled.rois[:, :num_fg]
        mask_targets = targets.mask_targets(
            gt_masks, gt_boxes, fg_rois, sampled.matched_gt[:, :num_fg], self.cfg.MRCNN.MASK_SIZE
        )
        return losses.mask_loss(
            self._mask_logits(features, fg_rois), sampled.classes[:, :num_fg], sampled.positive[:, :num_fg], mask_targets
        )

    # ------------------------------------------------------------------ inference

    def detect(self, images: tf.Tensor, image_info: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detections in original-image pixels (see the model contract in ``docs/architecture.md``).

        Returns ``boxes [B, D, 4]``, ``scores [B, D]``, ``classes`` int32 ``[B, D]`` (0 = padding),
        ``masks [B, D, m, m]`` (probabilities of the detected class, box-relative; zeros without the
        mask head) and ``num_detections`` int32 ``[B]``.
        """
        cfg = self.cfg
        image_info = tf.cast(image_info, tf.float32)
        image_sizes = image_info[:, 0:2]
        features, logits, deltas = self._features_and_rpn(images, training=False)
        proposals, _ = self._proposals(logits, deltas, image_sizes, training=False)
        class_logits, box_deltas = self.box_head(multilevel_roi_align(features, proposals, cfg.FRCNN.POOL_SIZE))
        boxes, scores, classes, num = postprocess.detect_boxes(
            proposals,
            class_logits,
            box_deltas,
            image_sizes,
            bbox_reg_weights=cfg.FRCNN.BBOX_REG_WEIGHTS,
            score_thresh=cfg.TEST.SCORE_THRESH,
            nms_thresh=cfg.TEST.NMS_THRESH,
            max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
        if self.mask_head is not None:
            mask_logits = self._mask_logits(features, boxes)  # [B, D, K, m, m]
            masks = tf.sigmoid(tf.gather(mask_logits, tf.maximum(classes - 1, 0), batch_dims=2))
        else:
            size = cfg.MRCNN.MASK_SIZE
            masks = tf.zeros(tf.concat([tf.shape(classes), [size, size]], 0))
        # Back to original-image pixels.
        scale = image_info[:, 2, None, None]
        original = box_ops.clip_boxes(boxes / scale, image_info[:, 3:4], image_info[:, 4:5])
        return {
            "boxes": original,
            "scores": scores,
            "classes": classes,
            "masks": masks,
            "num_detections": num,
        }

