# Developer entry points. README.md starts with `make dev` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q --disable-pip-version-check
PY_SOURCES := operator tests hack benchmarks
# The controllers are covered by unit tests alone (the e2e operator runs in another process).
UNIT_COVERAGE := --cov=miosa_operator.controllers --cov-report=term-missing:skip-covered --cov-fail-under=85
# The operator, and the unit tests' API-server fake (mypy checks it satisfies kube.client.KubeApi).
TYPED_SOURCES := operator/miosa_operator tests/unit/fakes.py tests/unit/conftest.py tests/unit/crd_rules.py tests/unit/test_fakes.py tests/unit/test_handlers.py

.PHONY: dev down test unit e2e lint bench bench-serving crds binaries images browser-tools env venv test-env test-env-down kind

## dev: local control plane + S3, CRDs, the operator and the examples, all on loopback
dev: venv binaries
	hack/dev.sh up

## down: stop everything `make dev` started
down:
	hack/env.sh down

## test: lint, unit and end-to-end tests (starts and stops its own environment)
test: venv binaries images browser-tools lint
	$(PY) -m pytest tests/unit $(UNIT_COVERAGE)
	$(PY) -m pytest tests/e2e

## lint: ruff (rules and format), mypy, the import layers (docs/architecture.md), shellcheck
lint: venv
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy $(TYPED_SOURCES)
	$(VENV)/bin/lint-imports
	hack/host-packages.sh shellcheck
	shellcheck hack/*.sh

## unit: unit tests, with the coverage of controllers/ (docs/architecture.md)
unit: venv
	$(PY) -m pytest tests/unit $(UNIT_COVERAGE)

e2e: venv binaries images browser-tools
	$(PY) -m pytest tests/e2e

## test-env: start the e2e suite's own environment (with its real node) and keep it, for `MIOSA_E2E_REUSE=1 make e2e`
test-env: venv binaries images
	eval "$$($(PY) tests/e2e/slots.py)" && hack/env.sh up --real-node

test-env-down:
	eval "$$($(PY) tests/e2e/slots.py)" && hack/env.sh down

## bench: performance benchmarks against their own isolated environment (not part of `make test`)
bench: venv binaries
	$(PY) -m benchmarks $(BENCH_ARGS)

## bench-serving: the static server against Debian's nginx (installs nginx, wrk and ab with apt-get)
bench-serving: venv
	$(PY) -m benchmarks.serving $(BENCH_ARGS)

## crds: regenerate crds/ from the pydantic models, and their copies in charts/ and manifests/
crds: venv binaries
	$(PY) -m miosa_operator.api.crdgen crds
	hack/sync-manifests.sh

## binaries: build etcd, Kubernetes, kwok, versitygw, helm, containerd, runc and CNI once (cached in ~/.cache/miosa-operator)
binaries:
	hack/host-packages.sh
	hack/build-binaries.sh

## images: the real node's images (pause, testapp, the operator from this checkout), cached in ~/.cache/miosa-operator/images
images: venv
	hack/build-images.sh

## kind: the operator on a kind cluster, for machines with Docker (not this one: see README)
kind:
	hack/kind.sh

## browser-tools: Debian's chromium and the npm packages of tests/e2e/node (HTTP API e2e tests)
browser-tools:
	hack/browser-tools.sh

## env: only the control plane and S3 server
env: binaries
	hack/env.sh up

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[test]'
	touch $@
