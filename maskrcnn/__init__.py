"""Mask R-CNN (TF2, Horovod) on COCO as a Kubeflow workflow: data, model, training, evaluation, serving."""

__version__ = "0.1.0"
