"""Core value types shared by every layer of the RL library.

Frozen, slotted dataclasses with `to_dict`/`from_dict` so trajectories travel
as JSON (JSONL exports, the database, the HTTP API) without losing a token.
Stdlib only: the rollout half of the library must import without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

JSONValue = Any
"""A value that survives `json.dumps` (str, int, float, bool, None, list, dict)."""

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for, after parsing."""

    name: str
    arguments: Mapping[str, JSONValue]
    id: str = ""

    def to_dict(self) -> dict[str, JSONValue]:
        return {"name": self.name, "arguments": dict(self.arguments), "id": self.id}

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> ToolCall:
        return cls(name=str(data["name"]), arguments=dict(data.get("arguments") or {}), id=str(data.get("id", "")))


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message. `name` is the tool's name on `tool` messages."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role {self.role!r} is not one of {', '.join(ROLES)}")

    def to_dict(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Message:
        return cls(
            role=str(data["role"]),
            content=str(data.get("content") or ""),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            name=data.get("name"),
        )


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved document: what a search tool returns and a corpus holds."""

    title: str
    text: str
    score: float = 0.0
    id: str = ""

    def to_dict(self) -> dict[str, JSONValue]:
        return {"id": self.id, "title": self.title, "text": self.text, "score": self.score}

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Passage:
        return cls(
            title=str(data.get("title", "")),
            text=str(data["text"]),
            score=float(data.get("score", 0.0)),
            id=str(data.get("id", "")),
        )


@dataclass(frozen=True, slots=True)
class Task:
    """One problem instance: a question and the answers that count as correct.

    `answers` holds every accepted alias (the first is the canonical one).
    `context` holds the task's own passages when the dataset ships them
    (HotpotQA distractors, MuSiQue paragraphs); `supporting_titles` the gold
    evidence titles, used for retrieval recall. `metadata` carries JSON values
    only (dataset name, question type, hop count).
    """

    id: str
    question: str
    answers: tuple[str, ...]
    context: tuple[Passage, ...] = ()
    supporting_titles: tuple[str, ...] = ()
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "id": self.id,
            "question": self.question,
            "answers": list(self.answers),
            "context": [p.to_dict() for p in self.context],
            "supporting_titles": list(self.supporting_titles),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Task:
        return cls(
            id=str(data["id"]),
            question=str(data["question"]),
            answers=tuple(str(a) for a in data.get("answers") or ()),
            context=tuple(Passage.from_dict(p) for p in data.get("context") or ()),
            supporting_titles=tuple(str(t) for t in data.get("supporting_titles") or ()),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a trajectory and where its tokens sit in `token_ids`.

    `token_start:token_end` spans the message's tokens (template tokens
    included). For assistant turns `step_reward` is the reward the env gave
    for that step, `parse_error` the tool-call parse error if any.
    `tool_error` marks a tool message whose call failed.
    """

    role: str
    text: str
    token_start: int
    token_end: int
    tool_calls: tuple[ToolCall, ...] = ()
    name: str | None = None
    step_reward: float = 0.0
    parse_error: str | None = None
    tool_error: bool = False

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "role": self.role,
            "text": self.text,
            "token_start": self.token_start,
            "token_end": self.token_end,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "name": self.name,
            "step_reward": self.step_reward,
            "parse_error": self.parse_error,
            "tool_error": self.tool_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Turn:
        return cls(
            role=str(data["role"]),
            text=str(data.get("text", "")),
            token_start=int(data.get("token_start", 0)),
            token_end=int(data.get("token_end", 0)),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            name=data.get("name"),
            step_reward=float(data.get("step_reward", 0.0)),
            parse_error=data.get("parse_error"),
            tool_error=bool(data.get("tool_error", False)),
        )


FinishReason = Literal["answer", "no_tool_call", "max_turns", "max_tokens", "context_overflow", "error"]


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A whole multi-turn episode at token level (token-in/token-out).

    Invariants (checked by `worker.rl.trajectories.check_trajectory`):
    `token_ids`, `loss_mask` and `logprobs` have one entry per token of the
    whole sequence, prompt included; `loss_mask[i] == 1` exactly on tokens the
    policy sampled, and there `logprobs[i]` is the engine's sampling logprob
    (None elsewhere). `step_rewards[k]` is the reward of the k-th assistant
    turn; `reward` is the rubric's total, `reward_breakdown` its parts.
    """

    task_id: str
    group_id: str
    token_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    prompt_length: int
    turns: tuple[Turn, ...]
    reward: float = 0.0
    reward_breakdown: Mapping[str, float] = field(default_factory=dict)
    step_rewards: tuple[float, ...] = ()
    terminated: bool = False
    truncated: bool = False
    finish_reason: str = "answer"
    final_answer: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def num_turns(self) -> int:
        """Assistant turns taken."""
        return sum(1 for t in self.turns if t.role == "assistant")

    @property
    def num_tool_calls(self) -> int:
        return sum(len(t.tool_calls) for t in self.turns if t.role == "assistant")

    @property
    def response_length(self) -> int:
        """Tokens the policy sampled (the mask-1 count)."""
        return sum(self.loss_mask)

    def sampled_token_ids(self) -> list[int]:
        """The policy-sampled ids, in order (the mask-1 tokens)."""
        return [t for t, m in zip(self.token_ids, self.loss_mask, strict=True) if m]

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "task_id": self.task_id,
            "group_id": self.group_id,
            "token_ids": list(self.token_ids),
            "loss_mask": list(self.loss_mask),
            "logprobs": list(self.logprobs),
            "prompt_length": self.prompt_length,
            "turns": [t.to_dict() for t in self.turns],
            "reward": self.reward,
            "reward_breakdown": dict(self.reward_breakdown),
            "step_rewards": list(self.step_rewards),
            "terminated": self.terminated,
            "truncated": self.truncated,
            "finish_reason": self.finish_reason,
            "final_answer": self.final_answer,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Trajectory:
        return cls(
            task_id=str(data["task_id"]),
            group_id=str(data["group_id"]),
            token_ids=tuple(int(t) for t in data["token_ids"]),
            loss_mask=tuple(int(m) for m in data["loss_mask"]),
            logprobs=tuple(None if lp is None else float(lp) for lp in data["logprobs"]),
            prompt_length=int(data.get("prompt_length", 0)),
            turns=tuple(Turn.from_dict(t) for t in data.get("turns") or ()),
            reward=float(data.get("reward", 0.0)),
            reward_breakdown={str(k): float(v) for k, v in (data.get("reward_breakdown") or {}).items()},
            step_rewards=tuple(float(r) for r in data.get("step_rewards") or ()),
            terminated=bool(data.get("terminated", False)),
            truncated=bool(data.get("truncated", False)),
            finish_reason=str(data.get("finish_reason", "answer")),
            final_answer=data.get("final_answer"),
            metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
        )
