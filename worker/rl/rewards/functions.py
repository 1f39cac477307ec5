"""Pure reward functions `(trajectory, task) -> float`, combined by `rewards.rubric.Rubric`.

Answer metrics score `trajectory.final_answer` against every alias in
`task.answers` (no answer scores 0); the rest read the recorded turns.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.rl.rewards.qa_metrics import cover_exact_match_score, exact_match_score, f1_score
from worker.rl.types import Task, Trajectory

RewardFn = Callable[[Trajectory, Task], float]
"""The reward-function contract."""


def exact_match(trajectory: Trajectory, task: Task) -> float:
    """1.0 when the normalised final answer equals a gold alias."""
    if trajectory.final_answer is None:
        return 0.0
    return exact_match_score(trajectory.final_answer, task.answers)


def cover_exact_match(trajectory: Trajectory, task: Task) -> float:
    """1.0 when a normalised gold alias appears inside the normalised final answer."""
    if trajectory.final_answer is None:
        return 0.0
    return cover_exact_match_score(trajectory.final_answer, task.answers)


def f1(trajectory: Trajectory, task: Task) -> float:
    """Token-level F1 of the final answer, max over gold aliases."""
    if trajectory.final_answer is None:
        return 0.0
    return f1_score(trajectory.final_answer, task.answers)


def format_reward(trajectory: Trajectory, task: Task) -> float:
    """1.0 when the episode ended with a final answer and no tool call failed to parse."""
    has_parse_error = any(t.parse_error for t in trajectory.turns if t.role == "assistant")
    return float(trajectory.final_answer is not None and not has_parse_error)


def tool_error_penalty(trajectory: Trajectory, task: Task) -> float:
    """Minus the fraction of executed tool calls that failed (0 when no calls)."""
    calls = trajectory.num_tool_calls
    if calls == 0:
        return 0.0
    failed = sum(1 for t in trajectory.turns if t.role == "tool" and t.tool_error and t.name is not None)
    return -min(1.0, failed / calls) if failed else 0.0


def called_tool(trajectory: Trajectory, task: Task) -> float:
    """1.0 when the policy made at least one parseable tool call."""
    return float(trajectory.num_tool_calls > 0)
