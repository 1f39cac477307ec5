"""The train/test protocol on the local benchmark samples (issue #14), enforced in code.

Train on HotpotQA and 2Wiki: the 500-record HF-format file and the MIGRES-format files, de-duplicated
by id. Evaluate on the original-format `dev_sample` files of HotpotQA and 2Wiki and on all of MuSiQue
(out of domain, as in Agent-R1). `build_training_pool` drops every training example whose id or
normalised question (`splits.question_key`) appears in an evaluation set; `protocol_violations` is the
check a test runs over whatever the recipe reads. Paths are relative to the benchmark data dir.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.rl.data.qa_formats import load_qa_tasks
from worker.rl.data.splits import question_key
from worker.rl.types import Task

TRAIN_FILES: tuple[tuple[str, str], ...] = (
    ("hotpotqa", "hotpotqa/dev_sample_hf_datasets_format.jsonl"),
    ("hotpotqa", "hotpotqa/dev_sample_migres_with_extra_field.jsonl"),
    ("2wiki", "2wiki/dev_sample_migres_with_extra_field.jsonl"),
)
"""(dataset, file) the training pool is drawn from, in priority order (the first copy of an id wins)."""
EVAL_FILES: tuple[tuple[str, str], ...] = (
    ("hotpotqa", "hotpotqa/dev_sample.json"),
    ("2wiki", "2wiki/dev_sample.json"),
    ("musique", "musique/dev_sample.jsonl"),
    ("musique", "musique/dev_sample_verl_style_qa_only.jsonl"),
)
"""(dataset, file) of the held-out sets: never a training example (MuSiQue entirely, both files)."""


@dataclass(frozen=True)
class TrainingPool:
    """The training tasks and what the protocol removed, for the run record."""

    tasks: list[Task]
    """De-duplicated training tasks with no evaluation id or question."""
    duplicates: int
    """Records dropped because an earlier training file had the same id or question."""
    excluded: int
    """Records dropped because their id or normalised question is in an evaluation set."""


def load_sets(data_dir: Path, files: Sequence[tuple[str, str]]) -> list[Task]:
    """Every task of `files` under `data_dir` (a missing file is an error naming it)."""
    return [task for dataset, rel in files for task in load_qa_tasks(str(data_dir / rel), dataset=dataset)]


def _keys(tasks: Sequence[Task]) -> tuple[set[str], set[str]]:
    return {t.id for t in tasks}, {question_key(t.question) for t in tasks}


def build_training_pool(
    data_dir: Path,
    *,
    train_files: Sequence[tuple[str, str]] = TRAIN_FILES,
    eval_files: Sequence[tuple[str, str]] = EVAL_FILES,
) -> TrainingPool:
    """The training tasks of `train_files`, de-duplicated, minus every example of `eval_files`."""
    eval_ids, eval_questions = _keys(load_sets(data_dir, eval_files))
    seen_ids: set[str] = set()
    seen_questions: set[str] = set()
    tasks: list[Task] = []
    duplicates = excluded = 0
    for task in load_sets(data_dir, train_files):
        question = question_key(task.question)
        if task.id in eval_ids or question in eval_questions:
            excluded += 1
        elif task.id in seen_ids or question in seen_questions:
            duplicates += 1
        else:
            seen_ids.add(task.id)
            seen_questions.add(question)
            tasks.append(task)
    return TrainingPool(tasks, duplicates, excluded)


def protocol_violations(train: Sequence[Task], evaluation: Sequence[Task]) -> list[str]:
    """One line per training task whose id or normalised question is in `evaluation` (empty = clean)."""
    eval_ids, eval_questions = _keys(evaluation)
    out = []
    for task in train:
        if task.id in eval_ids:
            out.append(f"training id {task.id!r} is an evaluation example")
        elif question_key(task.question) in eval_questions:
            out.append(f"training question {task.question!r} ({task.id}) is an evaluation question")
    return out
