"""Reward functions (table-driven) and rubric weighting, errors and external sources."""

from __future__ import annotations

import pytest

from worker.rl.rewards.functions import (
    called_tool,
    cover_exact_match,
    exact_match,
    f1,
    format_reward,
    tool_error_penalty,
)
from worker.rl.rewards.rubric import RewardSource, RewardTerm, Rubric
from worker.rl.types import Task, ToolCall, Trajectory, Turn

TASK = Task(id="t", question="Who?", answers=("Barack Obama", "Obama"))
CALL = (ToolCall("search", {"query": "x"}),)


def traj(answer: str | None, turns: tuple[Turn, ...] = ()) -> Trajectory:
    return Trajectory("t", "g", (), (), (), 0, turns, final_answer=answer)


def assistant(calls: tuple[ToolCall, ...] = (), parse_error: str | None = None) -> Turn:
    return Turn("assistant", "", 0, 0, tool_calls=calls, parse_error=parse_error)


def tool_turn(error: bool, name: str | None = "search") -> Turn:
    return Turn("tool", "", 0, 0, name=name, tool_error=error)


@pytest.mark.parametrize(
    ("fn", "answer", "expected"),
    [
        (exact_match, "obama", 1.0),
        (exact_match, "The Barack Obama!", 1.0),
        (exact_match, "President Obama", 0.0),
        (exact_match, None, 0.0),
        (cover_exact_match, "President Obama", 1.0),
        (cover_exact_match, "Biden", 0.0),
        (cover_exact_match, None, 0.0),
        (f1, "Obama", 1.0),
        (f1, "Michelle Obama", 2 / 3),  # best alias "Obama": P=1/2, R=1
        (f1, None, 0.0),
    ],
)
def test_answer_metrics(fn, answer: str | None, expected: float) -> None:  # type: ignore[no-untyped-def]
    assert fn(traj(answer), TASK) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fn", "trajectory", "expected"),
    [
        (format_reward, traj("Obama", (assistant(CALL), assistant())), 1.0),
        (format_reward, traj("Obama", (assistant(parse_error="bad JSON"), assistant())), 0.0),
        (format_reward, traj(None, (assistant(),)), 0.0),
        (tool_error_penalty, traj(None, (assistant(CALL * 2), tool_turn(True), tool_turn(False))), -0.5),
        (tool_error_penalty, traj(None, (assistant(CALL), tool_turn(False))), 0.0),
        (tool_error_penalty, traj(None, (assistant(parse_error="x"), tool_turn(True, name=None))), 0.0),
        (tool_error_penalty, traj(None, ()), 0.0),
        (called_tool, traj(None, (assistant(CALL),)), 1.0),
        (called_tool, traj("x", (assistant(),)), 0.0),
    ],
)
def test_trajectory_shape_rewards(fn, trajectory: Trajectory, expected: float) -> None:  # type: ignore[no-untyped-def]
    assert fn(trajectory, TASK) == pytest.approx(expected)


def _boom(trajectory: Trajectory, task: Task) -> float:
    raise ZeroDivisionError("oops")


class LabelStore:
    """A human-label source: scores only trajectories someone labelled."""

    def __init__(self, labels: dict[str, float]) -> None:
        self.labels = labels

    def score(self, trajectory: Trajectory, task: Task) -> float | None:
        return self.labels.get(trajectory.group_id)


def test_rubric_weights_metric_only_terms_and_errors() -> None:
    rubric = Rubric(
        [
            RewardTerm("em", exact_match, 1.0),
            RewardTerm("f1", f1, 0.0),
            RewardTerm("fmt", format_reward, 0.1),
            RewardTerm("broken", _boom, 5.0),
            RewardTerm("human", LabelStore({"g": 0.5}), 2.0),
        ]
    )
    result = rubric.score(traj("Obama", (assistant(),)), TASK)
    assert result.total == pytest.approx(1.0 + 0.1 + 2.0 * 0.5)
    assert result.breakdown == {"em": 1.0, "f1": 1.0, "fmt": 1.0, "human": 0.5}
    assert result.errors == {"broken": "ZeroDivisionError: oops"}
    assert result.metrics()["reward/broken/errors"] == 1.0
    assert "reward/broken" not in result.metrics()
    assert "reward/human/errors" in rubric.metric_names
    assert isinstance(LabelStore({}), RewardSource)


def test_pending_source_and_non_finite_values_are_left_out() -> None:
    rubric = Rubric(
        [
            RewardTerm("human", LabelStore({}), 1.0),
            RewardTerm("nan", lambda t, k: float("nan"), 1.0),
            RewardTerm("em", exact_match, 1.0),
        ]
    )
    result = rubric.score(traj("nope"), TASK)
    assert result.total == 0.0
    assert result.pending == ("human",)
    assert "nan" in result.errors
    assert result.breakdown == {"em": 0.0}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"name": "", "fn": exact_match}, "name"), ({"name": "a", "fn": exact_match, "weight": float("inf")}, "weight")],
)
def test_reward_term_validation(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        RewardTerm(**kwargs)  # type: ignore[arg-type]


def test_rubric_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="repeated: em"):
        Rubric([RewardTerm("em", exact_match), RewardTerm("em", f1)])
