"""`check_env`: the environment contract test, shipped for users (the UI's "validate environment").

Each check runs on its own and records a failure instead of stopping, so one
report lists everything that is wrong; `strict=True` raises `EnvCheckError`.
The env is closed at the end (the last check is that `close()` is idempotent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.rl.envs.base import StepResult, ToolEnv
from worker.rl.types import Message, Task, Trajectory

MALFORMED_CALL = '<tool_call>{"name": "search", "arguments": {"query": </tool_call>'


class EnvCheckError(Exception):
    """Raised by `check_env(strict=True)`; the message lists every failure."""


@dataclass(frozen=True, slots=True)
class EnvCheckReport:
    """Outcome of `check_env`."""

    env_name: str
    passed: tuple[str, ...] = ()
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.failures


def _check_step(result: object, where: str) -> None:
    if not isinstance(result, StepResult):
        raise AssertionError(f"{where}: step() returned {type(result).__name__}, expected StepResult")
    if not all(isinstance(m, Message) for m in result.observation):
        raise AssertionError(f"{where}: observation must be a list of Message")
    if not isinstance(result.reward, float) or not math.isfinite(result.reward):
        raise AssertionError(f"{where}: reward must be a finite float, got {result.reward!r}")


def _reset_deterministic(env: ToolEnv, task: Task) -> None:
    first, second = env.reset(task, seed=123), env.reset(task, seed=123)
    if not first or not all(isinstance(m, Message) for m in first):
        raise AssertionError("reset() must return a non-empty list of Message")
    if first != second:
        raise AssertionError("reset() with the same seed returned different messages")


def _tool_schemas(env: ToolEnv, task: Task) -> None:
    for schema in env.tool_schemas:
        function = schema.get("function") if isinstance(schema, dict) else None
        if schema.get("type") != "function" or not isinstance(function, dict) or "name" not in function:
            raise AssertionError(f"tool schema {schema!r} is not an OpenAI function schema")


def _malformed_call(env: ToolEnv, task: Task) -> None:
    env.reset(task, seed=0)
    result = env.step(MALFORMED_CALL)
    _check_step(result, "malformed tool call")
    if result.info.parse_error is None or not result.observation:
        raise AssertionError("a malformed tool call must give parse_error and an error observation")
    if result.terminated:
        raise AssertionError("a malformed tool call must not end the episode as terminated")


def _unknown_tool(env: ToolEnv, task: Task) -> None:
    env.reset(task, seed=0)
    result = env.step('<tool_call>{"name": "no_such_tool__", "arguments": {}}</tool_call>')
    _check_step(result, "unknown tool")
    if result.info.tool_errors != 1 or not result.observation:
        raise AssertionError("an unknown tool must give one tool error and an error observation")


def _max_turns_truncates(env: ToolEnv, task: Task) -> None:
    env.reset(task, seed=0)
    for turn in range(1, env.config.max_turns + 1):
        result = env.step(MALFORMED_CALL)
        _check_step(result, f"turn {turn}")
        last = turn == env.config.max_turns
        if result.truncated != last or result.terminated:
            raise AssertionError(f"turn {turn} of max_turns={env.config.max_turns}: truncated={result.truncated}")


def _answer_terminates(env: ToolEnv, task: Task) -> None:
    env.reset(task, seed=0)
    tag = env.config.answer_tag
    answer = task.answers[0] if task.answers else "x"
    result = env.step(f"<{tag}>{answer}</{tag}>")
    _check_step(result, "final answer")
    if not result.terminated or result.info.final_answer != answer:
        raise AssertionError("a final answer must terminate the episode and be reported in info.final_answer")


def _score_is_float(env: ToolEnv, task: Task) -> None:
    empty = Trajectory(task.id, "check", (), (), (), 0, (), final_answer=task.answers[0] if task.answers else None)
    total = env.score(empty, task).total
    if not isinstance(total, float) or not math.isfinite(total):
        raise AssertionError(f"score(...).total must be a finite float, got {total!r}")


def _close_idempotent(env: ToolEnv, task: Task) -> None:
    env.close()
    env.close()


CHECKS: tuple[tuple[str, Callable[[ToolEnv, Task], None]], ...] = (
    ("reset is deterministic for a seed", _reset_deterministic),
    ("tool schemas are OpenAI function schemas", _tool_schemas),
    ("malformed tool call gives an error observation", _malformed_call),
    ("unknown tool gives an error observation", _unknown_tool),
    ("max_turns truncates", _max_turns_truncates),
    ("final answer terminates", _answer_terminates),
    ("score returns a float total", _score_is_float),
    ("close() is idempotent", _close_idempotent),
)


def check_env(env: ToolEnv, task: Task, *, strict: bool = False) -> EnvCheckReport:
    """Run every contract check against `env` on `task`; closes `env` at the end."""
    passed: list[str] = []
    failures: list[str] = []
    for name, check in CHECKS:
        try:
            check(env, task)
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            passed.append(name)
    report = EnvCheckReport(type(env).__name__, tuple(passed), tuple(failures))
    if strict and failures:
        raise EnvCheckError(f"{report.env_name} failed {len(failures)} check(s):\n" + "\n".join(failures))
    return report
