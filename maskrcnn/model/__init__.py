"""Mask R-CNN with a ResNet-FPN backbone, one concept per module."""
