"""The train/test protocol of issue #14 on the shared benchmark samples: no evaluation example in training."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.rl.data.protocol import (
    EVAL_FILES,
    TRAIN_FILES,
    build_training_pool,
    load_sets,
    protocol_violations,
)
from worker.rl.data.splits import question_key
from worker.rl.types import Task

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "SOURCES.md").is_file(), reason=f"no shared benchmark samples at {DATA}")


def _task(task_id: str, question: str) -> Task:
    return Task(id=task_id, question=question, answers=("x",))


def test_violations_catch_ids_and_normalised_questions() -> None:
    evaluation = [_task("e1", "Who wrote Hamlet?"), _task("e2", "Where is Paris?")]
    train = [_task("e1", "Other?"), _task("t2", "who  wrote hamlet"), _task("t3", "Fresh question?")]
    problems = protocol_violations(train, evaluation)
    assert len(problems) == 2
    assert "'e1'" in problems[0]
    assert "t2" in problems[1]
    assert protocol_violations(train[2:], evaluation) == []


def test_pool_dedups_and_excludes(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        '{"question": "Q one?", "answer": "x", "id": "1"}\n{"question": "Q two?", "answer": "y", "id": "2"}\n'
    )
    (tmp_path / "b.jsonl").write_text(
        '{"question": "q one", "answer": "x", "id": "9"}\n{"question": "Q three?", "answer": "z", "id": "3"}\n'
    )
    (tmp_path / "e.jsonl").write_text('{"question": "Q three?", "answer": "z", "id": "30"}\n')
    pool = build_training_pool(
        tmp_path, train_files=[("d", "a.jsonl"), ("d", "b.jsonl")], eval_files=[("d", "e.jsonl")]
    )
    assert [t.id for t in pool.tasks] == ["1", "2"]
    assert (pool.duplicates, pool.excluded) == (1, 1)


@needs_data
def test_training_pool_never_holds_an_evaluation_example() -> None:
    pool = build_training_pool(DATA)
    evaluation = load_sets(DATA, EVAL_FILES)
    assert protocol_violations(pool.tasks, evaluation) == []
    ids = [t.id for t in pool.tasks]
    assert len(ids) == len(set(ids)), "the pool is de-duplicated by id"
    assert len({question_key(t.question) for t in pool.tasks}) == len(ids)
    raw = load_sets(DATA, TRAIN_FILES)
    assert len(pool.tasks) + pool.duplicates + pool.excluded == len(raw)
    assert pool.excluded > 0, "the HF-format file shares records with the original dev sample; they must go"
    assert {t.metadata.get("dataset") for t in pool.tasks} <= {"hotpotqa", "2wiki"}
