"""Trajectory invariants, JSONL round-trip, and file checks that catch corruption."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.rl.conftest import CharTokenizer, ListRetriever
from worker.rl.envs.qa import QASearchEnv
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.rollout import RolloutLimits, collect_trajectories
from worker.rl.trajectories import check_file, check_trajectory, read_jsonl, write_jsonl
from worker.rl.types import Task, Trajectory, Turn

SEARCH = '<tool_call>{"name": "search", "arguments": {"query": "capital of France"}}</tool_call>'


@pytest.fixture
def trajectories(
    chat: ChatFormat, tokenizer: CharTokenizer, retriever: ListRetriever, qa_task: Task
) -> list[Trajectory]:
    gen = ScriptedGenerator(tokenizer, [SEARCH, "<answer>Paris</answer>"])
    limits = RolloutLimits(max_total_tokens=20_000, max_new_tokens_per_turn=256)
    batch = collect_trajectories(
        lambda: QASearchEnv(retriever), gen, chat, [qa_task], group_size=2, params=SamplingParams(), limits=limits
    )
    return batch.trajectories


def _tiny(**kw: object) -> Trajectory:
    base = Trajectory(
        task_id="t",
        group_id="g",
        token_ids=(10, 11, 12, 13),
        loss_mask=(0, 0, 1, 1),
        logprobs=(None, None, -0.5, -0.1),
        prompt_length=2,
        turns=(Turn("user", "ab", 0, 2), Turn("assistant", "cd", 2, 4)),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({}, None),
        ({"loss_mask": (0, 0, 1)}, "lengths differ"),
        ({"loss_mask": (0, 0, 2, 1)}, "other than 0/1"),
        ({"logprobs": (None, None, None, -0.1)}, "under mask 1 but has no finite logprob"),
        ({"logprobs": (-1.0, None, -0.5, -0.1)}, "under mask 0 but has a logprob"),
        ({"prompt_length": 3}, "mask-1 tokens inside the prompt"),
        ({"turns": (Turn("user", "ab", 0, 2), Turn("assistant", "cd", 2, 9))}, "out of range"),
        ({"turns": (Turn("user", "ab", 0, 3), Turn("assistant", "cd", 2, 4))}, "overlaps"),
        ({"turns": (Turn("tool", "abcd", 0, 4),)}, "non-assistant tokens under mask 1"),
        ({"step_rewards": (0.0, 1.0)}, "2 step_rewards for 1 assistant turns"),
    ],
)
def test_check_trajectory_finds_each_problem(changes: dict[str, object], needle: str | None) -> None:
    problems = check_trajectory(_tiny(**changes))
    if needle is None:
        assert problems == []
    else:
        assert any(needle in p for p in problems), problems


def test_text_must_match_decoded_tokens(tokenizer: CharTokenizer, trajectories: list[Trajectory]) -> None:
    traj = trajectories[0]
    assert check_trajectory(traj, tokenizer) == []
    turns = list(traj.turns)
    turns[2] = replace(turns[2], text="something else")
    assert any("differs from the decode" in p for p in check_trajectory(replace(traj, turns=tuple(turns)), tokenizer))


def test_jsonl_round_trip(tmp_path: Path, trajectories: list[Trajectory]) -> None:
    path = tmp_path / "out.jsonl"
    assert write_jsonl(path, trajectories, extra={"run_id": "r1", "step": 3}) == 2
    first = json.loads(path.read_text().splitlines()[0])
    assert (first["run_id"], first["step"], first["format_version"]) == ("r1", 3, 1)
    assert list(read_jsonl(path)) == trajectories
    report = check_file(path)
    assert report.ok
    assert report.num_records == 2


def test_check_file_catches_a_corrupted_mask_and_bad_lines(tmp_path: Path, trajectories: list[Trajectory]) -> None:
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, trajectories)
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    tool_turn = next(t for t in record["turns"] if t["role"] == "tool")
    record["loss_mask"][tool_turn["token_start"]] = 1  # a tool-result token "trained on"
    lines[1] = json.dumps(record)
    lines.append("{not json")
    path.write_text("\n".join(lines) + "\n")
    report = check_file(path)
    assert not report.ok
    assert report.num_records == 3
    assert any(p.startswith("line 2:") and "non-assistant tokens under mask 1" in p for p in report.problems)
    assert any(p.startswith("line 3: unreadable record") for p in report.problems)
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: bad trajectory record"):
        list(read_jsonl(path))
