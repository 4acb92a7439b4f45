#!/bin/sh
# SageMaker-compatible entrypoint: SageMaker starts the container as `docker run IMAGE serve` with
# the model extracted to /opt/ml/model and expects HTTP on port 8080 (/ping, /invocations).
# Anything else runs as a command, e.g. `docker run IMAGE maskrcnn predict ...`.
set -eu

if [ "${1:-serve}" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    exec maskrcnn serve --model-dir "${SM_MODEL_DIR:-/opt/ml/model}" --host 0.0.0.0 --port "${SAGEMAKER_BIND_TO_PORT:-8080}" "$@"
fi
exec "$@"
