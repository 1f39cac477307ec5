"""`ToolEnv`: the gym-like multi-turn tool environment contract, extended through hooks.

`reset(task)` gives the opening messages; `step(assistant_text)` parses tool
calls, runs them, and returns tool messages, a step reward and the
terminated/truncated flags. Subclasses override hooks (`system_prompt`,
`step_reward`, `prefill`, `default_rubric`), never flags on the loop.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from worker.rl.rewards.functions import called_tool, exact_match, f1, format_reward, tool_error_penalty
from worker.rl.rewards.rubric import RewardTerm, Rubric, RubricResult
from worker.rl.tools.base import ToolResult, ToolSet
from worker.rl.tools.parsing import ParseResult, extract_answer, get_call_format
from worker.rl.types import JSONValue, Message, Task, ToolCall, Trajectory

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant that solves the user's problem step by step, calling tools when useful. "
    "When you know the answer, write it inside <{answer_tag}></{answer_tag}> tags."
)
NO_CALL_NUDGE = "Call a tool or give your final answer inside <{answer_tag}></{answer_tag}> tags."


@dataclass(frozen=True, slots=True)
class EnvConfig:
    """Knobs shared by every tool environment."""

    max_turns: int = 4
    """Assistant turns before the episode is truncated."""
    answer_tag: str = "answer"
    """The final answer is read from the last `<answer_tag>…</answer_tag>`."""
    call_format: str = "hermes"
    """Tool-call syntax (a name in `tools.parsing.CALL_FORMATS`)."""
    tool_timeout_s: float | None = None
    """Per-call timeout for every tool; None keeps each tool's own `timeout_s`."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """System prompt template; `{answer_tag}` is filled in."""
    first_turn_prefill: str = ""
    """Text the first assistant turn starts with (appended under loss mask 0)."""
    first_turn_prefill_turns: int = 1
    """Leading assistant turns that start with `first_turn_prefill` (2 with a forced search: search, search
    again, then the remaining turns are the model's own)."""
    answer_prefill_after_tool: str = ""
    """Text an assistant turn that follows tool results starts with (e.g. "<answer>")."""
    answer_prefill_on_last_turn: bool = False
    """Start the last allowed assistant turn with the opening answer tag, so a multi-turn episode that
    searched until its budget ran out still ends with an answer (prefill tokens carry loss mask 0)."""
    end_on_no_tool_call: bool = True
    """End the episode (finish "no_tool_call") when a turn has neither a call nor an answer."""

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"EnvConfig.max_turns must be >= 1, got {self.max_turns}")
        if not self.answer_tag.isidentifier():
            raise ValueError(f"EnvConfig.answer_tag must be a plain tag name like 'answer', got {self.answer_tag!r}")
        if self.first_turn_prefill_turns < 1:
            raise ValueError(f"EnvConfig.first_turn_prefill_turns must be >= 1, got {self.first_turn_prefill_turns}")
        if self.tool_timeout_s is not None and self.tool_timeout_s <= 0:
            raise ValueError(f"EnvConfig.tool_timeout_s must be > 0 or None, got {self.tool_timeout_s}")
        get_call_format(self.call_format)  # raises ValueError listing the valid names


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Diagnostics of one step."""

    parse_error: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()
    tool_errors: int = 0
    final_answer: str | None = None
    finish_reason: str | None = None
    """Set when the episode ended: "answer", "no_tool_call" or "max_turns"."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """What `ToolEnv.step` returns (gymnasium's five-tuple, typed)."""

    observation: list[Message]
    reward: float
    terminated: bool
    truncated: bool
    info: StepInfo = field(default_factory=StepInfo)


class ToolEnv:
    """A multi-turn environment whose actions are assistant messages that may call tools."""

    def __init__(self, tools: Sequence[Any], *, config: EnvConfig | None = None, rubric: Rubric | None = None) -> None:
        self.config = config or EnvConfig()
        self.toolset = ToolSet(tools, timeout_s=self.config.tool_timeout_s)
        self.call_format = get_call_format(self.config.call_format)
        self.rubric = rubric or self.default_rubric()
        self.task: Task | None = None
        self.messages: list[Message] = []
        self.rng = random.Random(0)
        self.turn = 0
        self._done = True
        self._closed = False

    # -- hooks ------------------------------------------------------------------------------

    def default_rubric(self) -> Rubric:
        """Exact match as the reward; F1, format, tool use and tool errors logged (weight 0)."""
        return Rubric(
            [
                RewardTerm("exact_match", exact_match, 1.0),
                RewardTerm("f1", f1, 0.0),
                RewardTerm("format", format_reward, 0.0),
                RewardTerm("called_tool", called_tool, 0.0),
                RewardTerm("tool_error_penalty", tool_error_penalty, 0.0),
            ]
        )

    def system_prompt(self, task: Task) -> str:
        return self.config.system_prompt.format(answer_tag=self.config.answer_tag)

    def initial_messages(self, task: Task) -> list[Message]:
        return [Message("system", self.system_prompt(task)), Message("user", task.question)]

    def step_reward(self, assistant_text: str, parsed: ParseResult, results: Sequence[ToolResult]) -> float:
        """Extra process reward for a step (added to the tools' own rewards). Default 0."""
        return 0.0

    def prefill(self, turn_index: int) -> str:
        """Text assistant turn `turn_index` (0-based) starts with; the rollout masks it out."""
        last_turn = 0 < turn_index == self.config.max_turns - 1  # a one-turn episode keeps its first prefill
        if self.config.answer_prefill_on_last_turn and last_turn:
            return f"<{self.config.answer_tag}>"
        if turn_index < self.config.first_turn_prefill_turns:
            return self.config.first_turn_prefill
        last = self.messages[-1] if self.messages else None
        return self.config.answer_prefill_after_tool if last is not None and last.role == "tool" else ""

    def no_call_observation(self, assistant_text: str) -> list[Message]:
        """The nudge sent when `end_on_no_tool_call` is False and a turn neither calls nor answers."""
        return [Message("user", NO_CALL_NUDGE.format(answer_tag=self.config.answer_tag))]

    # -- contract ---------------------------------------------------------------------------

    @property
    def tool_schemas(self) -> list[dict[str, JSONValue]]:
        return self.toolset.schemas

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Where a turn should stop: after a tool call or after the final answer."""
        return (*self.call_format.stop_strings, f"</{self.config.answer_tag}>")

    def tool_metrics(self) -> dict[str, float]:
        return self.toolset.metrics()

    def reset(self, task: Task, seed: int | None = None) -> list[Message]:
        if self._closed:
            raise RuntimeError("this environment is closed; make a new one")
        self.task, self.turn, self._done = task, 0, False
        self.rng = random.Random(seed)
        self.messages = self.initial_messages(task)
        return list(self.messages)

    def step(self, assistant_text: str) -> StepResult:
        if self._done or self.task is None:
            raise RuntimeError("step() called on a finished episode; call reset(task) first")
        self.turn += 1
        self.messages.append(Message("assistant", assistant_text))
        parsed = self.call_format.parse(assistant_text)
        answer = extract_answer(assistant_text, self.config.answer_tag)
        if answer is not None:
            return self._finish(StepInfo(final_answer=answer, finish_reason="answer", parse_error=parsed.error))
        if not parsed.calls and parsed.error is None:
            if self.config.end_on_no_tool_call:
                return self._finish(StepInfo(finish_reason="no_tool_call"))
            return self._continue(self.no_call_observation(assistant_text), 0.0, StepInfo())
        results = self.toolset.run(parsed.calls)
        observation = [Message("tool", r.content, name=c.name) for c, r in zip(parsed.calls, results, strict=True)]
        if parsed.error is not None:
            observation.append(Message("tool", f"Error: could not parse your tool call: {parsed.error}"))
        reward = sum(r.reward or 0.0 for r in results) + self.step_reward(assistant_text, parsed, results)
        info = StepInfo(
            parse_error=parsed.error,
            tool_calls=parsed.calls,
            tool_results=tuple(results),
            tool_errors=sum(r.is_error for r in results),
        )
        return self._continue(observation, float(reward), info)

    def _finish(self, info: StepInfo) -> StepResult:
        self._done = True
        return StepResult(observation=[], reward=0.0, terminated=True, truncated=False, info=info)

    def _continue(self, observation: list[Message], reward: float, info: StepInfo) -> StepResult:
        self.messages.extend(observation)
        truncated = self.turn >= self.config.max_turns
        if truncated:
            self._done = True
            info = replace(info, finish_reason="max_turns")
        return StepResult(observation=observation, reward=reward, terminated=False, truncated=truncated, info=info)

    def score(self, trajectory: Trajectory, task: Task) -> RubricResult:
        return self.score_batch([trajectory], [task])[0]

    def score_batch(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[RubricResult]:
        """Score many finished episodes at once (the rollout batches the episodes whose envs share a rubric)."""
        return self.rubric.score_batch(trajectories, tasks)

    def close(self) -> None:
        """Release tool resources; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for name in self.toolset.names:
            tool_ = self.toolset.get(name)
            owner = getattr(getattr(tool_, "fn", None), "__self__", None)
            closer = getattr(owner, "close", None)
            if callable(closer):
                closer()
