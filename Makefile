# lowbuild — the two commands a new machine needs are `make demo` and `make test`.
# Both set up everything themselves: a venv with the package, and (as root on a
# Debian host) the engines, their configuration and the local base images.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: all venv provision provision-test lint test test-unit test-integration test-min-deps demo clean

all: test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

# Idempotent; quick when everything is already in place.
provision:
	bash scripts/provision.sh

# What the tests need besides: a headless Chromium and its driver (the HTML report).
provision-test:
	bash scripts/provision.sh --browser

lint: venv
	$(BIN)/ruff format --check lowbuild tests scripts
	$(BIN)/ruff check lowbuild tests scripts
	$(BIN)/mypy
	cd scripts && MYPYPATH=$(CURDIR) ../$(BIN)/mypy --strict --cache-dir ../.mypy_cache/scripts bench.py

test-unit: venv
	$(BIN)/pytest tests/unit

test-integration: provision-test venv
	$(BIN)/pytest tests/integration

# Every runtime dependency at its declared minimum: the unit tests and a few commands.
test-min-deps:
	bash scripts/min_deps.sh

# --durations: where CI's time goes, printed at the end of every run.
test: provision-test venv lint test-min-deps
	$(BIN)/pytest --durations=40 tests

# The main job: the whole seed family (contexts/), built and smoke-tested on the
# engine lowbuild finds (LOWBUILD_ENGINE=docker|buildx|buildah to choose).
demo: provision venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/fetch_seed_sources.sh >/dev/null
	$(BIN)/lowbuild build --test

clean:
	rm -rf $(VENV) .venv-min build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (issue 7): lowbuild against per-image `podman build` and `docker buildx bake`,
# packing, fetching, planning at scale. Tables in bench-results/ (BENCH_ARGS=--quick to try).
.PHONY: bench
bench: provision venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/fetch_seed_sources.sh >/dev/null
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)
