"""HTTP serving with the SageMaker Mask R-CNN JSON contract."""
