"""COCO evaluation (box and mask AP) and reports."""
