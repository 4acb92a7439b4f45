"""Kubeflow pipelines: each ``<name>.py`` defines one pipeline and compiles it to ``<name>.yaml`` beside it."""
