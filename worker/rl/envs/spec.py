"""`EnvSpec`: the whole definition of a tool environment as frozen, JSON-round-trippable data.

One spec describes tools (built-ins by name, user tools by schema and sandbox key), the
task data and its held-out split, the search corpus, the rubric (built-in terms and user
reward functions), limits, the system prompt and the prefill settings. The studio stores
it per environment version, exports it as one file, and `envs.from_spec.env_from_spec`
turns it into a `ToolEnv`; built-in presets are specs too (`preset_spec`).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from worker.rl.vocab import BUILTIN_REWARDS, BUILTIN_TOOLS, RETRIEVERS, REWARD_KINDS
from worker.rl.vocab import TOOL_ALIASES as TOOL_ALIASES  # re-exported for from_spec

MAX_TOOL_RESULT_BYTES = 256 * 1024
"""Tool results beyond this are cut with a visible marker and counted (`tool/<name>/truncated`)."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


class SpecError(ValueError):
    """A spec field is missing or wrong; the message names the field and how to fix it."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise SpecError(message)


@dataclass(frozen=True)
class ToolSpec:
    """One tool: a built-in (`builtin` set) or a user tool run through the tool runner (`key` set)."""

    name: str
    """The name the model calls it by."""
    builtin: str | None = None
    """'search' or 'calculator' for a built-in."""
    key: str | None = None
    """The tool runner's key of a user tool (e.g. 'tool-3-v2')."""
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """JSON schema of a user tool's arguments."""
    source: str = ""
    """The user tool's Python source (inlined so an exported spec is self-contained)."""
    function: str = ""
    """The function the source defines (defaults to `name`)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """A built-in's settings (search: top_k, max_passage_chars)."""
    tool_id: int | None = None
    version: int | None = None
    """The studio's tool id and the pinned tool version, when it came from a saved tool."""
    network: tuple[str, ...] = ()
    """A user tool's network allow-list (`host`, `host:port`, `*.domain`); empty: no network (the default)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Files a user tool may read: name -> path; each is mounted read-only at `/data/<name>` in its sandbox."""

    def __post_init__(self) -> None:
        _need(bool(_NAME.fullmatch(self.name)), f"tools: name {self.name!r} must be letters, digits, '_' or '-'")
        _need((self.builtin is None) != (self.key is None), f"tools.{self.name}: set exactly one of builtin or key")
        _need(
            isinstance(self.network, list | tuple) and all(isinstance(h, str) and h.strip() for h in self.network),
            f"tools.{self.name}: network must be a list of host[:port] strings",
        )
        object.__setattr__(self, "network", tuple(self.network))
        _need(
            isinstance(self.files, Mapping)
            and all(isinstance(p, str) and _FILE_NAME.fullmatch(n) for n, p in self.files.items()),
            f"tools.{self.name}: files must map names (letters, digits, '.', '_', '-') to paths",
        )
        _need(
            self.builtin is None or (not self.network and not self.files),
            f"tools.{self.name}: network and files are for user tools; built-ins need neither",
        )
        if self.builtin is not None:
            _need(
                self.builtin in BUILTIN_TOOLS,
                f"tools.{self.name}: builtin {self.builtin!r} is not one of {', '.join(BUILTIN_TOOLS)}",
            )
        else:
            _need(
                self.parameters.get("type", "object") == "object",
                f"tools.{self.name}: parameters must be a JSON object schema",
            )


@dataclass(frozen=True)
class RewardSpec:
    """One rubric term: a built-in reward (`builtin`), a user reward function (`key`), or a trained reward
    model (`reward_model`: one score per trajectory; `step_reward_model`: a step scorer whose per-turn scores
    are process rewards). Reward-model terms are scored by the trainer in one batch per step: the run's
    resolved config carries them as `task.reward_models`.

    A user function of `kind="trajectory"` (the default) is `reward(answer: str, gold: list[str],
    trajectory: dict) -> float`, called once per episode; its weighted value joins the episode's reward.
    One of `kind="step"` is `reward(step: dict, task: dict) -> float`, called for each assistant turn that
    called tools: `step` = {"index" (the assistant turn, from 0), "text", "calls": [{"name", "arguments"}],
    "results": [{"name", "content", "error"}]}, `task` = {"id", "question", "answers"}; its weighted value
    joins that turn's `step_rewards` (process rewards: `algorithm.process_reward_weight` > 0), and the
    breakdown shows its mean over the episode's tool turns. Both kinds are called in one batch per rollout
    (all of a step's episodes or tool turns in one sandbox round trip); a failing item counts one
    `reward/<name>/errors` and adds nothing (never a silent 0)."""

    name: str
    weight: float = 1.0
    """Contribution to the total; 0 logs it as a metric only."""
    builtin: str | None = None
    key: str | None = None
    """The tool runner's key of a user reward function."""
    source: str = ""
    function: str = "reward"
    kind: str = "trajectory"
    """A user function's kind: 'trajectory' (once per episode) or 'step' (after each tool turn); see above."""
    reward_model: int | None = None
    """The studio's id of a trained reward model (`rubric term reward_model:<id>`)."""
    step_reward_model: int | None = None
    """The studio's id of a trained step scorer (`step_reward_model:<id>`, process rewards)."""
    normalize: bool = False
    """Reward-model terms: z-score the scores over each step's batch before weighting (they are logits)."""

    def __post_init__(self) -> None:
        _need(bool(_NAME.fullmatch(self.name)), f"rubric: term name {self.name!r} must be letters, digits, '_', '-'")
        _need(math.isfinite(self.weight), f"rubric.{self.name}: weight must be a finite number")
        kinds = (self.builtin, self.key, self.reward_model, self.step_reward_model)
        _need(
            sum(k is not None for k in kinds) == 1,
            f"rubric.{self.name}: set exactly one of builtin, key, reward_model or step_reward_model",
        )
        _need(
            not self.normalize or self.is_reward_model,
            f"rubric.{self.name}: normalize applies to reward_model / step_reward_model terms only",
        )
        _need(
            self.kind in REWARD_KINDS, f"rubric.{self.name}: kind {self.kind!r} is not one of {', '.join(REWARD_KINDS)}"
        )
        _need(
            self.kind == "trajectory" or self.key is not None,
            f"rubric.{self.name}: kind 'step' is for user reward functions (key); a trained step scorer is a "
            "step_reward_model term",
        )
        if self.builtin is not None:
            _need(
                self.builtin in BUILTIN_REWARDS,
                f"rubric.{self.name}: builtin {self.builtin!r} is not one of {', '.join(BUILTIN_REWARDS)}",
            )

    @property
    def is_step(self) -> bool:
        """A user function called after each tool turn (its values are process rewards)."""
        return self.kind == "step"

    @property
    def is_reward_model(self) -> bool:
        """A trained-model term, scored in batches by the trainer rather than per episode by the rubric."""
        return self.reward_model is not None or self.step_reward_model is not None


@dataclass(frozen=True)
class DataSpec:
    """Where the tasks come from and how the held-out split is drawn."""

    source: str = "demo"
    """'demo' (the generated KB; `location` is its seed), 'file' or 'hub' (a Hugging Face dataset id)."""
    location: str = "0"
    format: str = "auto"
    """For files: flat | hotpotqa | 2wiki | musique | auto."""
    heldout_fraction: float = 0.2
    """Seeded share of the tasks kept out of training (files; the demo has its own held-out set)."""
    seed: int = 0
    max_hops: int | None = None
    """Demo only: keep questions of at most this many hops."""
    train_size: int | None = None
    eval_size: int | None = None
    """Caps on the train and held-out sides (seeded samples); None keeps all."""

    def __post_init__(self) -> None:
        _need(self.source in ("demo", "file", "hub"), f"data.source must be demo, file or hub, got {self.source!r}")
        _need(0.0 < self.heldout_fraction < 1.0, "data.heldout_fraction must be in (0, 1), e.g. 0.2")


@dataclass(frozen=True)
class CorpusSpec:
    """The documents the built-in search tool indexes: a JSONL of {title, text}, else the tasks' own context."""

    location: str | None = None
    retriever: str = "bm25"
    """How the search tool ranks it: 'bm25' (sparse) or 'dense' (the bundled MiniLM embeddings)."""

    def __post_init__(self) -> None:
        _need(
            self.retriever in RETRIEVERS, f"corpus.retriever {self.retriever!r} is not one of {', '.join(RETRIEVERS)}"
        )


@dataclass(frozen=True)
class LimitsSpec:
    max_turns: int = 4
    max_new_tokens_per_turn: int = 128
    max_total_tokens: int = 2048
    tool_timeout_s: float = 10.0
    """Wall-clock seconds one tool call may take."""

    def __post_init__(self) -> None:
        _need(self.max_turns >= 1, "limits.max_turns must be >= 1")
        _need(self.max_new_tokens_per_turn >= 1, "limits.max_new_tokens_per_turn must be >= 1")
        _need(self.max_total_tokens >= 16, "limits.max_total_tokens must be >= 16")
        _need(self.tool_timeout_s > 0, "limits.tool_timeout_s must be > 0")


@dataclass(frozen=True)
class PrefillSpec:
    """Forced structure that lets a small model make parseable calls (prefill tokens carry loss mask 0)."""

    force_first_call: str | None = None
    """A tool name: turn 1 starts with the opening of a call to it (and of its first string argument)."""
    first_turn_prefill: str = ""
    """Literal text turn 1 starts with (ignored when `force_first_call` is set)."""
    prefill_turns: int = 1
    """Leading turns that start with that call (or text): 2 makes a search agent search twice before it may
    answer, so a 2-hop question gets its second hop from a model too small to choose to search again."""
    answer_after_tool: bool = False
    """Start every turn that follows tool results with the opening answer tag."""
    answer_on_last_turn: bool = False
    """Start the last allowed turn (limits.max_turns) with the opening answer tag."""


@dataclass(frozen=True)
class EnvSpec:
    """A complete, versionable environment definition (see the module docstring)."""

    name: str
    tools: tuple[ToolSpec, ...] = ()
    data: DataSpec = field(default_factory=DataSpec)
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    rubric: tuple[RewardSpec, ...] = (RewardSpec("exact_match", 1.0, builtin="exact_match"),)
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    system_prompt: str = ""
    """The system prompt; `{answer_tag}` is replaced. Empty: a default naming the answer tag."""
    answer_tag: str = "answer"
    question_template: str = "{question}"
    """The user turn; `{question}` is replaced by the task's question."""
    prefill: PrefillSpec = field(default_factory=PrefillSpec)
    show_tool_schemas: bool = True
    """List the tool schemas in the system prompt (off when the prompt itself teaches the calls)."""
    version: int | None = None
    environment_id: int | None = None

    def __post_init__(self) -> None:
        _need(bool(self.name.strip()), "name must not be empty")
        _need(self.answer_tag.isidentifier(), f"answer_tag must be a plain tag name, got {self.answer_tag!r}")
        for kind, items in (("tools", self.tools), ("rubric", self.rubric)):
            names = [t.name for t in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            _need(not dup, f"{kind}: names must be unique; repeated: {', '.join(dup)}")
        forced = self.prefill.force_first_call
        _need(
            forced is None or forced in {t.name for t in self.tools},
            f"prefill.force_first_call {forced!r} must name one of the environment's tools",
        )
        turns = self.prefill.prefill_turns
        _need(
            isinstance(turns, int) and 1 <= turns <= self.limits.max_turns,
            f"prefill.prefill_turns must be an integer from 1 to limits.max_turns ({self.limits.max_turns}); "
            f"got {turns!r}",
        )

    @property
    def user_tools(self) -> tuple[ToolSpec, ...]:
        return tuple(t for t in self.tools if t.key is not None)

    @property
    def user_rewards(self) -> tuple[RewardSpec, ...]:
        return tuple(r for r in self.rubric if r.key is not None)

    @property
    def reward_model_terms(self) -> tuple[RewardSpec, ...]:
        return tuple(r for r in self.rubric if r.is_reward_model)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvSpec:
        """Strict: an unknown key or a wrong value raises `SpecError` naming it."""
        if not isinstance(data, Mapping):
            raise SpecError(f"an environment spec must be an object, got {type(data).__name__}")
        raw = dict(data)
        raw["tools"] = tuple(_build(ToolSpec, t, f"tools[{i}]") for i, t in enumerate(raw.get("tools") or ()))
        if "rubric" in raw:
            raw["rubric"] = tuple(_build(RewardSpec, r, f"rubric[{i}]") for i, r in enumerate(raw["rubric"]))
        for key, kind in (("data", DataSpec), ("corpus", CorpusSpec), ("limits", LimitsSpec), ("prefill", PrefillSpec)):
            if key in raw:
                raw[key] = _build(kind, raw[key], key)
        spec: EnvSpec = _build(cls, raw, "")
        return spec


def _build(kind: Any, value: Any, where: str) -> Any:
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise SpecError(f"{where or 'spec'} must be an object, got {type(value).__name__}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SpecError(f"{where or 'spec'}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    try:
        return kind(**value)
    except TypeError as exc:
        raise SpecError(f"{where or 'spec'}: {exc}") from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def load_spec_file(path: str | Path) -> EnvSpec:
    """An exported environment file (.json or .toml, sources inlined)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"environment file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {exc}") from exc
    spec = EnvSpec.from_dict(data.get("environment", data))
    data_loc, corpus_loc = spec.data.location, spec.corpus.location
    if spec.data.source == "file" and not Path(data_loc).is_absolute():  # relative to the file
        data_loc = str((p.parent / data_loc).resolve())
    if corpus_loc and not Path(corpus_loc).is_absolute():
        corpus_loc = str((p.parent / corpus_loc).resolve())
    tools = tuple(
        replace(t, files={n: str((p.parent / f).resolve()) for n, f in t.files.items()}) if t.files else t
        for t in spec.tools
    )
    return replace(
        spec, tools=tools, data=replace(spec.data, location=data_loc), corpus=replace(spec.corpus, location=corpus_loc)
    )
