# The two commands a newcomer needs:  `make demo` (the whole pipeline locally on generated data)
# and `make test` (the test suite). Each creates .venv and installs the pinned working set first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo

# Horovod 0.28.1 ships only as source: build it against the installed TF, with Gloo (no MPI on a
# laptop or CI); NGC's GPU image brings its own MPI/NCCL build. pip caches the built wheel.
HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

.PHONY: demo test venv lint images push-images

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(HOROVOD_ENV) $(BIN)/pip install -q --no-build-isolation -c constraints.txt horovod==0.28.1
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/maskrcnn pipeline run --local --workdir $(WORKDIR)

test: $(STAMP)
	$(BIN)/pytest

# Container images (images/<name>/Dockerfile, context = repository root): `make images`, then
# `make push-images`. Defaults come from maskrcnn/images.py, the names every manifest and
# component uses; override e.g. `make push-images REGISTRY=123.dkr.ecr.us-east-1.amazonaws.com/ml TAG=0.1.1`.
REGISTRY ?= $(shell sed -n 's/^REGISTRY = "\(.*\)"/\1/p' maskrcnn/images.py)
TAG ?= $(shell sed -n 's/^TAG = "\(.*\)"/\1/p' maskrcnn/images.py)
IMAGES := data train serve pipeline
DOCKER ?= docker
DOCKER_BUILD_FLAGS ?= --platform linux/amd64
# aws-ofi-nccl + libfabric in the training image (EFA); empty to leave them out.
EFA_INSTALLER_VERSION ?= 1.38.0

images: $(IMAGES:%=image-%)

image-%: images/%/Dockerfile
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) $(if $(filter train,$*),--build-arg EFA_INSTALLER_VERSION=$(EFA_INSTALLER_VERSION)) \
		-f images/$*/Dockerfile -t $(REGISTRY)/maskrcnn-$*:$(TAG) .

push-images: images
	$(foreach name,$(IMAGES),$(DOCKER) push $(REGISTRY)/maskrcnn-$(name):$(TAG) &&) true
