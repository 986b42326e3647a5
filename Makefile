# SentryML — the two commands:  `make demo`  and  `make test`.
# Each does its own set-up (virtualenv in .venv, installs, Kafka jars) and is idempotent.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint typecheck pytest bench soak clean kafka-start kafka-stop

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: setup
	@bash scripts/demo.sh $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: setup
	@$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m bench.run

# Worker memory over 30 minutes of steady traffic (not in CI): bench/results/soak.json,
# which the next `make bench` includes in its table.
soak: setup
	@$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m bench.soak --minutes $(or $(SOAK_MINUTES),30)

clean:
	rm -rf .sentryml demo-out .pytest_cache .mypy_cache .ruff_cache
