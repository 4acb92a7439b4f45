"""The Kubeflow pipeline: compile, run locally, submit, schedule."""
