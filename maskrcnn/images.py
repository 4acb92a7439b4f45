"""Container images the project builds (images/*/Dockerfile, `make images`), in one place.

Components, the MPIJob builder, the deployer and the manifests all name images through here (or,
for kustomize, through the same names), so a registry or tag change is one edit.
"""

REGISTRY = "ghcr.io/maskrcnn-kubeflow"
TAG = "0.1.0"


def image(name: str, registry: str = REGISTRY, tag: str = TAG) -> str:
    """``{registry}/maskrcnn-{name}:{tag}`` for name in data, train, serve, pipeline."""
    return f"{registry}/maskrcnn-{name}:{tag}"


DATA_IMAGE = image("data")          # download + convert (CPU, no TF GPU)
TRAIN_IMAGE = image("train")        # NGC TensorFlow 25.02 + Horovod: MPIJob launcher/workers, evaluate
SERVE_IMAGE = image("serve")        # CPU TF serving, SageMaker-compatible entrypoint
PIPELINE_IMAGE = image("pipeline")  # KFP launcher steps: k8s train runner, deploy (no TensorFlow)
