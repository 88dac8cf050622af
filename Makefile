# Every target installs what it needs: the virtual environment and the cluster binaries are
# built on first use and cached under $(MEDUSA_CACHE), outside the clone.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
MEDUSA_CACHE ?= $(HOME)/.cache/medusa-operator
export MEDUSA_CACHE
PYTEST_ARGS ?=

VENV = $(shell hack/venv.sh)
PY = $(VENV)/bin/python

.PHONY: help deps venv binaries images prepare test unit cluster-up cluster-down cluster-status demo demo-simulated crds clean-cache

help:
	@echo "make demo         run the operator on an embedded local cluster, in real containers"
	@echo "make demo-simulated  the same with kwok pods and scripted Job results (GPU scenarios)"
	@echo "make test         run the whole test suite (what CI runs)"
	@echo "make unit         fast tests that need no cluster, server or model"
	@echo "make cluster-up   start the local control plane (kubeconfig: $(MEDUSA_CACHE)/cluster/kubeconfig)"
	@echo "make cluster-down stop it"
	@echo "make images       build the operator and reference serving/builder images here (cached by content key)"
	@echo "make crds         regenerate crds/ from the API types"

deps:
	@hack/system-deps.sh

venv: deps
	@hack/venv.sh >/dev/null

binaries:
	@hack/build-binaries.sh >/dev/null

images: venv
	$(PY) hack/images.py

# What the whole suite and the demo need, made side by side on a cold cache: the Go builds keep
# the cores busy while the images mostly wait on downloads and disk.
prepare: deps
	@$(MAKE) --no-print-directory -j2 binaries images

test: prepare
	$(PY) -m pytest --durations=20 $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -m "not cluster and not triton and not s3 and not model and not slow and not images" $(PYTEST_ARGS)

cluster-up: venv binaries
	$(PY) hack/localcluster.py up

cluster-down: venv
	$(PY) hack/localcluster.py down

cluster-status: venv
	$(PY) hack/localcluster.py status

crds: venv
	$(PY) -m medusa_operator.api.crdgen --write crds/ charts/medusa-operator/files/

demo: prepare
	$(PY) hack/demo.py

demo-simulated: venv binaries
	$(PY) hack/demo.py --simulated

clean-cache:
	rm -rf $(MEDUSA_CACHE)
