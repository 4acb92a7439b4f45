"""Mask R-CNN with a ResNet-FPN backbone, one concept per module.

Map (data flows top to bottom; boxes are ``[y1, x1, y2, x2]`` float32 pixels everywhere):

- ``mask_rcnn``: the ``MaskRCNN`` Keras model: ``compute_losses(batch)`` (training) and
  ``detect(images, image_info)`` (inference), wiring the modules below.
- ``backbone``: ResNet-50/101 with frozen BN and tensorpack weight names;
  ``backbone_weights``: loads tensorpack's ImageNet ``.npz`` / a TF checkpoint, applies ``BACKBONE.WEIGHTS``.
- ``fpn``: P2–P6. ``anchors``: one size per level, several ratios (NumPy, computed once).
- ``rpn``: the RPN head and proposal generation (per-level top-k, NMS, merge).
- ``sampling``: gather-based bilinear sampling (XLA-friendly) under ``roi_align`` (multi-level
  ROIAlign), ``targets`` (mask targets) and ``postprocess`` (mask pasting).
- ``targets``: in-graph anchor and ROI labelling, balanced fg/bg sampling, mask targets.
- ``heads``: box head (2 FC) and class-specific mask head. ``losses``: the five loss terms.
- ``postprocess``: per-class NMS of detections and ``paste_masks``.
- ``box_ops``: IoU, encode/decode, clipping. ``summary`` / ``cli``: ``maskrcnn model summary``.
"""
