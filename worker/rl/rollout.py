"""The batched multi-turn rollout: token-in/token-out, the loss mask built as it goes.

Each turn makes ONE `generator.generate` call over every still-active episode;
sampled ids and logprobs go in under mask 1, everything else (prompt, prefills,
template and tool-observation ids) under mask 0. Model output is decoded only
to give the env text; it is never re-tokenized.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from worker.rl.envs.base import StepResult, ToolEnv
from worker.rl.generation.base import CacheHolder, Completion, Generator, SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.rewards.rubric import RubricResult
from worker.rl.types import Message, Task, Trajectory, Turn

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RolloutLimits:
    """Budgets of one episode (defaults = `RolloutConfig`'s; a test pins that they agree)."""

    max_turns: int = 4
    """Assistant turns at most (the env's own `max_turns` also applies)."""
    max_new_tokens_per_turn: int = 96
    """Tokens one assistant turn may sample."""
    max_total_tokens: int = 1024
    """Whole-sequence budget (prompt included); crossing it ends the episode as "context_overflow"."""

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_new_tokens_per_turn", "max_total_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutLimits.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class RolloutStats:
    """Throughput and tool counters of one `collect_trajectories` call."""

    num_trajectories: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    tool_metrics: Mapping[str, float] = field(default_factory=dict)
    engine: Mapping[str, float] = field(default_factory=dict)
    """What the engine computed for this rollout (`ENGINE_COUNTERS` of its `EngineStats`, summed like the
    tool counters; empty for an engine without stats)."""

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        """`rollout/...`, `perf/...` and `tool/...` metrics."""
        out = {
            "rollout/num_trajectories": float(self.num_trajectories),
            "rollout/generated_tokens": float(self.generated_tokens),
            "perf/rollout_s": self.seconds,
            "perf/rollout_tokens_per_s": self.tokens_per_s,
        }
        return {**out, **self.tool_metrics}


@dataclass(frozen=True, slots=True)
class RolloutBatch:
    """Trajectories in group-major order, plus stats."""

    trajectories: list[Trajectory]
    stats: RolloutStats


def concat_batches(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """Several rollouts as one: trajectories in order, counters and seconds summed."""
    tool_metrics: dict[str, float] = {}
    engine: dict[str, float] = {}
    for batch in batches:
        _merge(tool_metrics, batch.stats.tool_metrics)
        _merge(engine, batch.stats.engine)
    stats = RolloutStats(
        num_trajectories=sum(b.stats.num_trajectories for b in batches),
        generated_tokens=sum(b.stats.generated_tokens for b in batches),
        seconds=sum(b.stats.seconds for b in batches),
        tool_metrics=tool_metrics,
        engine=engine,
    )
    return RolloutBatch(trajectories=[t for b in batches for t in b.trajectories], stats=stats)


ENGINE_COUNTERS = ("prompt_tokens", "prefill_tokens", "reused_tokens", "prefill_s", "decode_s", "decode_tokens")
"""The `EngineStats` fields a rollout reports (`engine/<name>`; the seconds as `perf/engine_<name>`): how
much of the prompts the engine prefilled against what a full re-prefill would have, and where its time went."""


def _engine_counters(generator: Generator) -> dict[str, float]:
    stats = getattr(generator, "stats", None)
    return {name: float(getattr(stats, name, 0)) for name in ENGINE_COUNTERS} if stats is not None else {}


def derive_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (same inputs, same seed, on every machine)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class _Episode:
    """Mutable per-episode state while the batch runs (internal)."""

    env: ToolEnv
    task: Task
    group_id: str
    max_total_tokens: int
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    prompt_length: int = 0
    turn_start: int = 0
    done: bool = False
    terminated: bool = False
    truncated: bool = False
    finish_reason: str = "max_turns"
    final_answer: str | None = None

    @property
    def room(self) -> int:
        """Tokens left in the whole-sequence budget."""
        return self.max_total_tokens - len(self.ids)

    def add(self, ids: Sequence[int], message: Message | None = None, tool_error: bool = False) -> None:
        """Append ids under mask 0 (logprob None), recording `message` as a turn over them."""
        start = len(self.ids)
        self.ids.extend(ids)
        self.mask.extend([0] * len(ids))
        self.logprobs.extend([None] * len(ids))
        if message is not None:
            turn = Turn(message.role, message.content, start, len(self.ids), name=message.name, tool_error=tool_error)
            self.turns.append(turn)

    def end(self, finish_reason: str, *, terminated: bool = False) -> None:
        self.done, self.terminated, self.truncated = True, terminated, not terminated
        self.finish_reason = finish_reason


def _start(env: ToolEnv, task: Task, group_id: str, seed: int, chat: ChatFormat, limits: RolloutLimits) -> _Episode:
    """Phase 0: reset the env and lay down the prompt ids (mask 0)."""
    episode = _Episode(env=env, task=task, group_id=group_id, max_total_tokens=limits.max_total_tokens)
    messages = env.reset(task, seed=seed)
    parts = chat.prompt_parts(messages, env.tool_schemas)
    for message, part in zip(messages, parts, strict=False):
        episode.add(part, message)
    episode.add(parts[-1])  # the assistant header
    episode.prompt_length = len(episode.ids)
    if episode.room < 1:
        episode.end("context_overflow")
    return episode


def _add_prefill(episode: _Episode, chat: ChatFormat, turn: int) -> None:
    """Phase 1: the env's prefill for this turn, under mask 0."""
    prefill = episode.env.prefill(turn)
    episode.turn_start = len(episode.ids)
    episode.add(list(chat.tokenizer.encode(prefill, add_special_tokens=False)) if prefill else [])
    if episode.room < 1:
        episode.end("context_overflow")


def _add_sample(episode: _Episode, completion: Completion, budget: int, chat: ChatFormat) -> tuple[str, bool]:
    """Phase 2: sampled ids under mask 1, cut to this episode's budget; returns (turn text, hit length)."""
    sampled = list(completion.token_ids[:budget])
    hit_length = completion.finish_reason == "length" or len(completion.token_ids) > budget
    episode.ids.extend(sampled)
    episode.mask.extend([1] * len(sampled))
    episode.logprobs.extend(completion.logprobs[: len(sampled)])
    text = chat.tokenizer.decode(episode.ids[episode.turn_start :], skip_special_tokens=True)
    return text, hit_length


def _safe_step(env: ToolEnv, text: str) -> StepResult | Exception:
    try:
        return env.step(text)
    except Exception as exc:  # a buggy env hook ends its episode, not the batch
        logger.exception("env %s raised in step()", type(env).__name__)
        return exc


def _record_step(
    episode: _Episode, text: str, hit_length: bool, result: StepResult | Exception, chat: ChatFormat, is_last_turn: bool
) -> None:
    """Phase 3: the assistant turn, the close ids, then the observation or the episode's end."""
    sampled_end = len(episode.ids)
    close = chat.turn_close_ids(episode.ids[episode.turn_start :])
    info = result.info if isinstance(result, StepResult) else None
    episode.turns.append(
        Turn(
            "assistant",
            text,
            episode.turn_start,
            sampled_end,
            tool_calls=info.tool_calls if info else (),
            step_reward=result.reward if isinstance(result, StepResult) else 0.0,
            parse_error=info.parse_error if info else None,
        )
    )
    fits = len(close) <= episode.room
    if fits:
        episode.add(close)
    if not isinstance(result, StepResult) or info is None:
        episode.end("error")
    elif result.terminated:
        episode.final_answer = info.final_answer
        if hit_length and info.finish_reason == "no_tool_call":
            episode.end("max_tokens")
        else:
            episode.end(info.finish_reason or "answer", terminated=True)
    elif result.truncated or is_last_turn:
        episode.end(info.finish_reason or "max_turns")
    else:
        _add_observation(episode, result, chat, fits)


def _add_observation(episode: _Episode, result: StepResult, chat: ChatFormat, closed: bool) -> None:
    parts = chat.observation_parts(result.observation)
    if not closed or sum(len(p) for p in parts) + 1 > episode.room:
        episode.end("context_overflow")
        return
    tool_results = result.info.tool_results
    for i, (message, part) in enumerate(zip(result.observation, parts, strict=False)):
        is_error = tool_results[i].is_error if i < len(tool_results) else message.role == "tool"
        episode.add(part, message, tool_error=is_error)
    episode.add(parts[-1])  # the next assistant header


def _trajectory(episode: _Episode) -> Trajectory:
    """Phase 5: freeze the episode (scored later, in batches, by `_score_all`)."""
    assistant = [t for t in episode.turns if t.role == "assistant"]
    traj = Trajectory(
        task_id=episode.task.id,
        group_id=episode.group_id,
        token_ids=tuple(episode.ids),
        loss_mask=tuple(episode.mask),
        logprobs=tuple(episode.logprobs),
        prompt_length=episode.prompt_length,
        turns=tuple(episode.turns),
        step_rewards=tuple(t.step_reward for t in assistant),
        terminated=episode.terminated,
        truncated=episode.truncated,
        finish_reason=episode.finish_reason,
        final_answer=episode.final_answer,
    )
    metrics = {
        "num_tool_calls": float(traj.num_tool_calls),
        "num_parse_errors": float(sum(1 for t in assistant if t.parse_error)),
        "num_tool_errors": float(sum(1 for t in traj.turns if t.role == "tool" and t.tool_error and t.name)),
        "num_turns": float(traj.num_turns),
        "response_length": float(traj.response_length),
    }
    return replace(traj, metrics=metrics)


def _scored(traj: Trajectory, scored: RubricResult) -> Trajectory:
    """A trajectory with its rubric result: reward, breakdown, error counts, step terms added to its steps."""
    errors = {k: v for k, v in scored.metrics().items() if k.endswith("/errors")}
    out = replace(
        traj, reward=scored.total, reward_breakdown=dict(scored.breakdown), metrics={**traj.metrics, **errors}
    )
    if not scored.step_rewards:
        return out
    steps = tuple(a + b for a, b in zip(traj.step_rewards, scored.step_rewards, strict=True))
    it = iter(steps)
    turns = tuple(replace(t, step_reward=next(it)) if t.role == "assistant" else t for t in traj.turns)
    return replace(out, step_rewards=steps, turns=turns)


def _score_all(episodes: Sequence[_Episode], trajectories: list[Trajectory]) -> list[Trajectory]:
    """Score the episodes in one batch per rubric: envs of one factory share theirs (`envs.from_spec`), so a
    user reward function costs one runner round trip per rollout, not one per episode."""
    groups: dict[int, list[int]] = {}
    for i, episode in enumerate(episodes):
        groups.setdefault(id(episode.env.rubric), []).append(i)
    out = list(trajectories)
    for members in groups.values():
        env = episodes[members[0]].env
        try:
            results = env.score_batch([trajectories[i] for i in members], [episodes[i].task for i in members])
        except Exception:
            logger.exception("env %s raised in score_batch(); rewards left at 0 and flagged", type(env).__name__)
            for i in members:
                out[i] = replace(trajectories[i], metrics={**trajectories[i].metrics, "reward/score/errors": 1.0})
            continue
        for i, result in zip(members, results, strict=True):
            out[i] = _scored(trajectories[i], result)
    return out


def _merge(into: dict[str, float], metrics: Mapping[str, float]) -> None:
    for key, value in metrics.items():
        into[key] = into.get(key, 0.0) + value


def _run_turns(
    episodes: list[_Episode],
    generator: Generator,
    chat: ChatFormat,
    params: SamplingParams,
    limits: RolloutLimits,
    seed: int,
    stop: tuple[str, ...],
) -> None:
    """The turn loop: one batched engine call per turn over the episodes still running, then env steps."""
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="env-step") as pool:
        for turn in range(limits.max_turns):
            for episode in episodes:
                if not episode.done:
                    _add_prefill(episode, chat, turn)
            active = [e for e in episodes if not e.done]
            if not active:
                break
            budgets = [min(limits.max_new_tokens_per_turn, e.room) for e in active]
            turn_seed = derive_seed(seed, params.seed if params.seed is not None else -1, turn)
            turn_params = replace(params, max_new_tokens=max(budgets), stop=stop, seed=turn_seed)
            completions = generator.generate([e.ids for e in active], turn_params)
            if len(completions) != len(active):
                raise RuntimeError(f"{generator.name} returned {len(completions)} completions for {len(active)}")
            sampled = [_add_sample(e, c, b, chat) for e, c, b in zip(active, completions, budgets, strict=True)]
            results = list(pool.map(_safe_step, [e.env for e in active], [text for text, _ in sampled]))
            is_last_turn = turn + 1 >= limits.max_turns
            for episode, (text, hit), result in zip(active, sampled, results, strict=True):
                _record_step(episode, text, hit, result, chat, is_last_turn)


def collect_trajectories(
    env_factory: Callable[[], ToolEnv],
    generator: Generator,
    chat: ChatFormat,
    tasks: Sequence[Task],
    *,
    group_size: int,
    params: SamplingParams,
    limits: RolloutLimits,
    seed: int = 0,
    group_prefix: str = "",
) -> RolloutBatch:
    """Roll out `group_size` episodes per task, batched per turn; group-major order.

    `params.seed` (when set) and `seed` are mixed with the turn index into the
    base seed of each turn's call; the engine derives per-request seeds from it.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    started = time.perf_counter()
    episodes = [
        _start(env_factory(), task, f"{group_prefix}{ti}:{task.id}", derive_seed(seed, ti, si), chat, limits)
        for ti, task in enumerate(tasks)
        for si in range(group_size)
    ]
    env_stops = [s for e in episodes for s in e.env.stop_strings]
    stop = tuple(dict.fromkeys((*params.stop, *chat.stop_strings, *env_stops)))
    engine_before = _engine_counters(generator)
    try:
        _run_turns(episodes, generator, chat, params, limits, seed, stop)
    finally:  # an engine's KV caches live for one rollout (also when it fails or is cancelled)
        if isinstance(generator, CacheHolder):
            generator.release()
    trajectories = _score_all(episodes, [_trajectory(e) for e in episodes])
    tool_metrics: dict[str, float] = {}
    for episode in episodes:
        _merge(tool_metrics, episode.env.tool_metrics())
        episode.env.close()
    generated = sum(t.response_length for t in trajectories)
    engine = {name: value - engine_before[name] for name, value in _engine_counters(generator).items()}
    stats = RolloutStats(len(trajectories), generated, time.perf_counter() - started, tool_metrics, engine)
    return RolloutBatch(trajectories=trajectories, stats=stats)
