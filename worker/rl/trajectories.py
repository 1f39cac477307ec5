"""Trajectory invariants and the JSONL export format (see docs/trajectory-format.md).

`check_trajectory` returns problems as strings (empty list = valid) so the UI,
the CLI and tests can all show every problem at once; `read_jsonl` names the
line of a bad record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.rl.generation.base import Tokenizer
from worker.rl.types import JSONValue, Trajectory

FORMAT_VERSION = 1


def _check_tokens(traj: Trajectory) -> list[str]:
    problems: list[str] = []
    n = len(traj.token_ids)
    if len(traj.loss_mask) != n or len(traj.logprobs) != n:
        problems.append(
            f"lengths differ: token_ids {n}, loss_mask {len(traj.loss_mask)}, logprobs {len(traj.logprobs)}"
        )
        return problems
    bad_mask = [i for i, m in enumerate(traj.loss_mask) if m not in (0, 1)]
    if bad_mask:
        problems.append(f"loss_mask has values other than 0/1 at positions {bad_mask[:5]}")
    for i, (m, lp) in enumerate(zip(traj.loss_mask, traj.logprobs, strict=True)):
        if m == 1 and (lp is None or not math.isfinite(lp)):
            problems.append(f"token {i} is under mask 1 but has no finite logprob")
            break
        if m == 0 and lp is not None:
            problems.append(f"token {i} is under mask 0 but has a logprob")
            break
    if not 0 <= traj.prompt_length <= n:
        problems.append(f"prompt_length {traj.prompt_length} is outside 0..{n}")
    elif any(traj.loss_mask[: traj.prompt_length]):
        problems.append("mask-1 tokens inside the prompt")
    return problems


def _check_turns(traj: Trajectory, tokenizer: Tokenizer | None) -> list[str]:
    problems: list[str] = []
    n = len(traj.token_ids)
    previous_end = 0
    for k, turn in enumerate(traj.turns):
        where = f"turn {k} ({turn.role})"
        if not 0 <= turn.token_start <= turn.token_end <= n:
            problems.append(f"{where}: span {turn.token_start}:{turn.token_end} is out of range 0..{n}")
            continue
        if turn.token_start < turn.token_end:
            if turn.token_start < previous_end:
                problems.append(f"{where}: span {turn.token_start}:{turn.token_end} overlaps the previous turn")
            previous_end = turn.token_end
        span_mask = traj.loss_mask[turn.token_start : turn.token_end]
        if turn.role != "assistant" and any(m == 1 for m in span_mask):
            problems.append(f"{where}: non-assistant tokens under mask 1")
        if tokenizer is not None and turn.role == "assistant":
            decoded = tokenizer.decode(
                list(traj.token_ids[turn.token_start : turn.token_end]), skip_special_tokens=True
            )
            if decoded != turn.text:
                problems.append(f"{where}: text differs from the decode of its tokens ({decoded[:40]!r}...)")
    if len(traj.step_rewards) not in (0, traj.num_turns):
        problems.append(f"{len(traj.step_rewards)} step_rewards for {traj.num_turns} assistant turns")
    return problems


def check_trajectory(traj: Trajectory, tokenizer: Tokenizer | None = None) -> list[str]:
    """Every violated invariant of `traj` (empty when valid); with a tokenizer, also text/token agreement."""
    problems = _check_tokens(traj)
    if problems and problems[0].startswith("lengths differ"):
        return problems
    return problems + _check_turns(traj, tokenizer)


def write_jsonl(
    path: str | Path, trajectories: Iterable[Trajectory], extra: Mapping[str, JSONValue] | None = None
) -> int:
    """Write one JSON record per trajectory (with `extra` keys merged in); returns the count."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for traj in trajectories:
            record: dict[str, Any] = {"format_version": FORMAT_VERSION, **(extra or {}), **traj.to_dict()}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> Iterator[Trajectory]:
    """Trajectories from a JSONL file; ValueError naming the line of the first bad record."""
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield Trajectory.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: bad trajectory record ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True, slots=True)
class FileCheckReport:
    """Outcome of `check_file`."""

    path: str
    num_records: int
    problems: tuple[str, ...]
    """`line N: <problem>` entries (unreadable records included)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_file(path: str | Path, tokenizer: Tokenizer | None = None) -> FileCheckReport:
    """Check every record of a JSONL export; keeps going past bad records."""
    problems: list[str] = []
    count = 0
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            count += 1
            try:
                traj = Trajectory.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                problems.append(f"line {line_no}: unreadable record ({type(exc).__name__}: {exc})")
                continue
            problems.extend(f"line {line_no}: {p}" for p in check_trajectory(traj, tokenizer))
    return FileCheckReport(path=str(path), num_records=count, problems=tuple(problems))
