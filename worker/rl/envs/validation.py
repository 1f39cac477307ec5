"""Validate a studio environment: build its `QASearchEnv` and run `check_env` on a few of its tasks.

The studio's "validate environment" job calls this with plain values (dataset
kind/location, builtin tool names, limits); the builtin `bm25_search` indexes the
dataset's context passages, or the generated demo KB when no dataset is attached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from worker.rl.envs.base import EnvConfig
from worker.rl.envs.checker import check_env
from worker.rl.envs.qa import QASearchEnv
from worker.rl.types import Passage, Task

logger = logging.getLogger(__name__)

DATASET_KINDS = ("demo", "file", "hub")


@dataclass(frozen=True)
class EnvValidationRequest:
    """What to validate (the API's environment row, as plain values)."""

    dataset_kind: str | None = None
    """'demo', 'file', 'hub', or None for the generated demo KB."""
    dataset_location: str | None = None
    """File path, hub id, or the demo seed."""
    dataset_format: str = "auto"
    """hotpotqa | 2wiki | musique | jsonl | auto (detected)."""
    builtin_tools: tuple[str, ...] = ()
    """Names of the environment's builtin tools (e.g. 'bm25_search')."""
    max_turns: int = 3
    """Assistant turns per episode (the checker verifies truncation at this count)."""
    top_k: int = 3
    """Passages per search."""
    num_tasks: int = 3
    """Tasks the checker runs on."""

    def __post_init__(self) -> None:
        if self.dataset_kind is not None and self.dataset_kind not in DATASET_KINDS:
            valid = ", ".join(DATASET_KINDS)
            raise ValueError(f"dataset_kind must be one of {valid} or None, got {self.dataset_kind!r}")
        for name in ("max_turns", "top_k", "num_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; raise it in the limits")


def _load(request: EnvValidationRequest) -> tuple[list[Task], list[Passage]]:
    from worker.rl.tools.search import corpus_from_tasks

    if request.dataset_kind in (None, "demo"):
        from worker.rl.data.demo_kb import build_demo_dataset

        location = request.dataset_location or "0"
        seed = int(location) if location.isdigit() else 0
        demo = build_demo_dataset(seed=seed)
        return list(demo.heldout[: request.num_tasks]), list(demo.passages)
    from worker.rl.data.qa_formats import load_qa_tasks

    fmt = None if request.dataset_format == "auto" else request.dataset_format
    tasks = load_qa_tasks(str(request.dataset_location), format=fmt, limit=request.num_tasks)
    return tasks, corpus_from_tasks(tasks)


def validate_environment(request: EnvValidationRequest) -> dict[str, Any]:
    """`{"ok", "env_name", "tasks_checked", "passed", "failures", "notes"}` (failures name the task)."""
    from worker.rl.tools.search import BM25Retriever

    notes: list[str] = []
    unknown = [t for t in request.builtin_tools if t != "bm25_search"]
    if unknown:
        notes.append(f"builtin(s) {', '.join(unknown)} are not part of the QA search environment and were not checked")
    try:
        tasks, passages = _load(request)
    except Exception as exc:  # a bad file or hub id is a validation failure the user must see, not a crash
        return {
            "ok": False,
            "env_name": "QASearchEnv",
            "tasks_checked": 0,
            "passed": [],
            "failures": [f"loading the dataset failed: {type(exc).__name__}: {exc}"],
            "notes": notes,
        }
    failures: list[str] = []
    if not tasks:
        failures.append("the dataset gave no tasks; check its location and format")
    if not passages:
        failures.append("the dataset has no context passages for bm25_search to index; attach a file with context")
    passed: set[str] = set()
    if not failures:
        retriever = BM25Retriever.from_passages(passages)
        config = EnvConfig(max_turns=request.max_turns)
        for task in tasks:
            report = check_env(QASearchEnv(retriever, top_k=request.top_k, config=config), task)
            passed.update(report.passed)
            failures.extend(f"task {task.id}: {failure}" for failure in report.failures)
    logger.info("environment check on %d task(s): %d failure(s)", len(tasks), len(failures))
    return {
        "ok": not failures,
        "env_name": "QASearchEnv",
        "tasks_checked": len(tasks),
        "passed": sorted(passed),
        "failures": failures,
        "notes": notes,
    }
