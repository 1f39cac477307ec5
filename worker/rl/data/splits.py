"""Deterministic, seeded train/eval splits and subsets of `Task` lists.

Tasks that share an id or a normalised question are kept on the same side, so
an eval set never leaks a train question (duplicates are common in scraped QA).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from worker.rl.types import Task


def question_key(question: str) -> str:
    """A question compared across files: lower case, punctuation dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", question.lower()).split())


def _groups(tasks: Sequence[Task]) -> list[list[int]]:
    """Indices of tasks grouped by shared id or shared normalised question (union-find)."""
    parent = list(range(len(tasks)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        for key in (f"id:{task.id}", f"q:{question_key(task.question)}"):
            j = first_seen.setdefault(key, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(tasks)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def split_tasks(tasks: Sequence[Task], *, eval_size: int | float, seed: int) -> tuple[list[Task], list[Task]]:
    """Split into (train, eval) with no id or question shared across the two sides.

    `eval_size` is a count (int ≥ 0) or a fraction in (0, 1). Groups of
    duplicates move together, so the eval side may exceed a count by a few.
    Both sides keep the input order.
    """
    if isinstance(eval_size, bool) or not isinstance(eval_size, int | float):
        raise ValueError(f"eval_size must be an int count or a float fraction, got {eval_size!r}")
    if isinstance(eval_size, float):
        if not 0.0 < eval_size < 1.0:
            raise ValueError(f"eval_size as a fraction must be in (0, 1), got {eval_size}; use an int for a count")
        target = round(eval_size * len(tasks))
    else:
        if not 0 <= eval_size <= len(tasks):
            raise ValueError(f"eval_size must be between 0 and the number of tasks ({len(tasks)}), got {eval_size}")
        target = eval_size
    groups = _groups(tasks)
    random.Random(seed).shuffle(groups)
    eval_idx: set[int] = set()
    for group in groups:
        if len(eval_idx) >= target:
            break
        eval_idx.update(group)
    train = [t for i, t in enumerate(tasks) if i not in eval_idx]
    held = [t for i, t in enumerate(tasks) if i in eval_idx]
    return train, held


def sample_subset(tasks: Sequence[Task], n: int, seed: int) -> list[Task]:
    """`n` tasks drawn without replacement with `seed`, in input order (all when n ≥ len)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n >= len(tasks):
        return list(tasks)
    keep = sorted(random.Random(seed).sample(range(len(tasks)), n))
    return [tasks[i] for i in keep]
