"""The batched multi-turn rollout with a scripted model: masks, spans, limits, batching, rewards."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from tests.rl.conftest import CharTokenizer, ListRetriever, SpyGenerator
from worker.rl.envs.base import EnvConfig
from worker.rl.envs.calculator import CalculatorEnv
from worker.rl.envs.qa import FORCE_FIRST_SEARCH_PREFILL, QASearchEnv
from worker.rl.generation.base import Completion, EngineStats, SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.rollout import RolloutBatch, RolloutLimits, collect_trajectories, concat_batches
from worker.rl.training.metrics import collection_metrics
from worker.rl.trajectories import check_trajectory
from worker.rl.types import Task, Trajectory

SEARCH = '<tool_call>{"name": "search", "arguments": {"query": "capital of France"}}</tool_call>'
PARAMS = SamplingParams(max_new_tokens=512, temperature=1.0)
BIG = RolloutLimits(max_turns=3, max_new_tokens_per_turn=256, max_total_tokens=20_000)


def _run(
    chat: ChatFormat,
    gen: ScriptedGenerator,
    tasks: Sequence[Task],
    env_factory: Callable[[], object],
    *,
    group_size: int = 1,
    limits: RolloutLimits = BIG,
) -> RolloutBatch:
    return collect_trajectories(
        env_factory,
        gen,
        chat,
        tasks,
        group_size=group_size,
        params=PARAMS,
        limits=limits,  # type: ignore[arg-type]
    )


def _assert_valid(traj: Trajectory, tokenizer: CharTokenizer) -> None:
    assert check_trajectory(traj, tokenizer) == []
    for turn in traj.turns:
        span = traj.loss_mask[turn.token_start : turn.token_end]
        if turn.role != "assistant":
            assert not any(span), f"{turn.role} tokens under mask 1"


def test_search_then_answer(
    chat: ChatFormat, tokenizer: CharTokenizer, retriever: ListRetriever, qa_task: Task
) -> None:
    gen = SpyGenerator(tokenizer, [SEARCH + " ignored tail", "<answer>Paris</answer>"])
    (traj,) = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever)).trajectories
    assert traj.num_turns == 2
    assert [t.role for t in traj.turns] == ["system", "user", "assistant", "tool", "assistant"]
    sampled = [t for call in gen.outputs for c in call for t in c.token_ids]
    assert traj.sampled_token_ids() == sampled  # token-in/token-out: exactly what the engine produced
    assert tokenizer.decode(sampled) == SEARCH + "<answer>Paris</answer>"
    assert [lp for lp in traj.logprobs if lp is not None] == [0.0] * len(sampled)
    assert traj.turns[2].text == SEARCH
    assert traj.turns[2].tool_calls[0].arguments == {"query": "capital of France"}
    assert traj.turns[3].text.startswith("Doc 1 (Title: France)")
    assert (traj.terminated, traj.truncated, traj.finish_reason, traj.final_answer) == (True, False, "answer", "Paris")
    assert traj.reward_breakdown["exact_match"] == 1.0
    assert traj.reward == pytest.approx(1.1)  # exact match + 0.1 format bonus
    assert traj.step_rewards == (0.0, 0.0)
    assert traj.metrics["num_tool_calls"] == 1
    assert traj.metrics["response_length"] == len(sampled)
    text = tokenizer.decode(traj.token_ids)
    assert text.endswith("<|im_start|>assistant\n<answer>Paris</answer><|im_end|>\n")
    _assert_valid(traj, tokenizer)


@pytest.mark.parametrize(
    ("reply", "parse_error", "tool_errors", "needle"),
    [
        ('<tool_call>{"name": "search", "arguments": {"query": }</tool_call>', True, 0, "not valid JSON"),
        ('<tool_call>{"name": "wiki", "arguments": {"query": "x"}}</tool_call>', False, 1, "unknown tool 'wiki'"),
        ('<tool_call>{"name": "search", "arguments": {"text": "x"}}</tool_call>', False, 1, "unknown argument(s)"),
        ('<tool_call>{"name": "search", "arguments": {"query": "Fra', True, 0, "missing </tool_call>"),
    ],
)
def test_malformed_calls_become_error_observations(
    chat: ChatFormat,
    tokenizer: CharTokenizer,
    retriever: ListRetriever,
    qa_task: Task,
    reply: str,
    parse_error: bool,
    tool_errors: int,
    needle: str,
) -> None:
    gen = SpyGenerator(tokenizer, [reply, "<answer>Paris</answer>"])
    batch = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever))
    (traj,) = batch.trajectories
    assert traj.finish_reason == "answer"
    assert (traj.turns[2].parse_error is not None) == parse_error
    assert traj.metrics["num_parse_errors"] == float(parse_error)
    assert traj.metrics["num_tool_errors"] == tool_errors
    tool_turns = [t for t in traj.turns if t.role == "tool"]
    assert any(needle in t.text for t in tool_turns)
    assert all(t.tool_error for t in tool_turns)
    assert traj.reward_breakdown["format"] == float(not parse_error)
    if tool_errors:
        assert (
            batch.stats.tool_metrics.get("tool/search/errors", 0)
            + batch.stats.tool_metrics.get("tool/_unknown/errors", 0)
            == 1
        )
    _assert_valid(traj, tokenizer)


def test_max_turns_truncates(
    chat: ChatFormat, tokenizer: CharTokenizer, retriever: ListRetriever, qa_task: Task
) -> None:
    gen = SpyGenerator(tokenizer, lambda prompt: SEARCH)
    limits = RolloutLimits(max_turns=2, max_new_tokens_per_turn=256, max_total_tokens=20_000)
    (traj,) = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever), limits=limits).trajectories
    assert (traj.terminated, traj.truncated, traj.finish_reason) == (False, True, "max_turns")
    assert traj.num_turns == 2
    assert traj.reward == 0.0
    _assert_valid(traj, tokenizer)
    env_limited = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever, config=EnvConfig(max_turns=1)))
    assert env_limited.trajectories[0].num_turns == 1
    assert env_limited.trajectories[0].finish_reason == "max_turns"


def test_context_overflow_truncates(
    chat: ChatFormat, tokenizer: CharTokenizer, retriever: ListRetriever, qa_task: Task
) -> None:
    prompt_len = len(chat.prompt_ids(QASearchEnv(retriever).reset(qa_task), QASearchEnv(retriever).tool_schemas))
    gen = SpyGenerator(tokenizer, lambda prompt: SEARCH)
    limits = RolloutLimits(max_turns=3, max_new_tokens_per_turn=256, max_total_tokens=prompt_len + len(SEARCH) + 50)
    (traj,) = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever), limits=limits).trajectories
    assert (traj.truncated, traj.finish_reason) == (True, "context_overflow")
    assert len(traj.token_ids) <= limits.max_total_tokens
    _assert_valid(traj, tokenizer)
    tiny = RolloutLimits(max_total_tokens=prompt_len)
    (none,) = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever), limits=tiny).trajectories
    assert (none.num_turns, none.finish_reason) == (0, "context_overflow")


def test_budget_cut_mid_turn_keeps_a_valid_prefix(
    chat: ChatFormat, tokenizer: CharTokenizer, retriever: ListRetriever, qa_task: Task
) -> None:
    prompt_len = len(chat.prompt_ids(QASearchEnv(retriever).reset(qa_task), QASearchEnv(retriever).tool_schemas))
    gen = SpyGenerator(tokenizer, lambda prompt: "x" * 100)
    limits = RolloutLimits(max_turns=3, max_new_tokens_per_turn=256, max_total_tokens=prompt_len + 10)
    (traj,) = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever), limits=limits).trajectories
    assert traj.response_length == 10
    assert traj.finish_reason == "max_tokens"
    assert len(traj.token_ids) <= limits.max_total_tokens
    _assert_valid(traj, tokenizer)


def test_batching_shrinks_and_groups_are_ordered(chat: ChatFormat, tokenizer: CharTokenizer) -> None:
    def reply(prompt: str) -> str:
        turns_done = prompt.count("<|im_start|>assistant") - 1
        if "What is 17*23?" in prompt and turns_done == 0:
            return '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>'
        return "<answer>391</answer>" if "What is 17*23?" in prompt else "<answer>4</answer>"

    tasks = [Task("a", "What is 17*23?", ("391",)), Task("b", "What is 2+2?", ("4",))]
    gen = SpyGenerator(tokenizer, reply)
    batch = collect_trajectories(
        CalculatorEnv, gen, chat, tasks, group_size=3, params=PARAMS, limits=BIG, seed=7, group_prefix="s1/"
    )
    assert gen.calls == [6, 3]  # task b's group answers at once and drops out
    assert [t.task_id for t in batch.trajectories] == ["a"] * 3 + ["b"] * 3
    assert [t.group_id for t in batch.trajectories] == ["s1/0:a"] * 3 + ["s1/1:b"] * 3
    assert [t.reward for t in batch.trajectories] == [pytest.approx(1.1)] * 6
    assert batch.stats.tool_metrics["tool/calculator/calls"] == 3
    assert batch.stats.generated_tokens == sum(t.response_length for t in batch.trajectories)
    assert batch.stats.metrics()["rollout/num_trajectories"] == 6
    assert {p.stop for p in gen.params} == {("</tool_call>", "</answer>")}
    seeds = [p.seed for p in gen.params]
    assert len(set(seeds)) == 2
    again = SpyGenerator(tokenizer, reply)
    collect_trajectories(CalculatorEnv, again, chat, tasks, group_size=3, params=PARAMS, limits=BIG, seed=7)
    assert [p.seed for p in again.params] == seeds
    for traj in batch.trajectories:
        _assert_valid(traj, tokenizer)


def test_prefill_is_masked_and_natural_eos_is_closed(
    chat: ChatFormat, tokenizer: CharTokenizer, retriever: ListRetriever, qa_task: Task
) -> None:
    config = EnvConfig(first_turn_prefill=FORCE_FIRST_SEARCH_PREFILL, answer_prefill_after_tool="<answer>")
    gen = SpyGenerator(tokenizer, ['France capital"}}</tool_call>', "Paris</answer>"])
    (traj,) = _run(chat, gen, [qa_task], lambda: QASearchEnv(retriever, config=config)).trajectories
    first = traj.turns[2]
    assert first.text == FORCE_FIRST_SEARCH_PREFILL + 'France capital"}}</tool_call>'
    prefill_len = len(tokenizer.encode(FORCE_FIRST_SEARCH_PREFILL))
    assert traj.loss_mask[first.token_start : first.token_start + prefill_len] == (0,) * prefill_len
    assert traj.final_answer == "Paris"
    assert traj.reward_breakdown["exact_match"] == 1.0
    _assert_valid(traj, tokenizer)

    natural = SpyGenerator(tokenizer, ["I do not know."])  # no stop string: the engine appends EOS (<|im_end|>)
    (plain,) = _run(chat, natural, [qa_task], lambda: QASearchEnv(retriever)).trajectories
    assert plain.finish_reason == "no_tool_call"
    assert plain.terminated
    assert tokenizer.decode(plain.token_ids).endswith("I do not know.<|im_end|>\n")
    assert plain.loss_mask[-2:] == (1, 0)  # EOS sampled (mask 1), the newline is template (mask 0)
    _assert_valid(plain, tokenizer)


def test_rejects_bad_group_size(chat: ChatFormat, tokenizer: CharTokenizer, qa_task: Task) -> None:
    with pytest.raises(ValueError, match="group_size"):
        _run(chat, SpyGenerator(tokenizer, ["x"]), [qa_task], CalculatorEnv, group_size=0)


class CachingGenerator(SpyGenerator):
    """An engine that keeps caches between calls (`CacheHolder`); counts releases, can fail mid-rollout."""

    def __init__(self, tokenizer: CharTokenizer, replies: Sequence[str], *, fail_on_call: int | None = None) -> None:
        super().__init__(tokenizer, replies)
        self.releases = 0
        self.fail_on_call = fail_on_call

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        if self.fail_on_call is not None and len(self.params) + 1 == self.fail_on_call:
            raise RuntimeError("engine died")
        return super().generate(prompts, params)

    def release(self) -> None:
        self.releases += 1


def test_engine_caches_are_released_when_a_rollout_ends_or_fails(
    chat: ChatFormat, tokenizer: CharTokenizer, qa_task: Task
) -> None:
    """A prefix-caching engine's KV caches live for one rollout: freed after it, and after a failed one."""
    ok = CachingGenerator(tokenizer, ["<answer>4</answer>"])
    _run(chat, ok, [qa_task], CalculatorEnv, group_size=2)
    assert ok.releases == 1
    broken = CachingGenerator(tokenizer, ["<answer>4</answer>"], fail_on_call=1)
    with pytest.raises(RuntimeError, match="engine died"):
        _run(chat, broken, [qa_task], CalculatorEnv, group_size=2)
    assert broken.releases == 1


class CountingGenerator(SpyGenerator):
    """An engine with `EngineStats`: identical prompts in a call are prefilled once (as the HF engine does)."""

    def __init__(self, tokenizer: CharTokenizer, replies: Sequence[str]) -> None:
        super().__init__(tokenizer, replies)
        self.stats = EngineStats(prompt_tokens=1000, prefill_tokens=900)  # earlier work: not this rollout's

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        self.stats.prefill_tokens += sum(len(p) for p in {tuple(p) for p in prompts})
        return super().generate(prompts, params)


def test_a_rollout_reports_what_its_engine_prefilled(chat: ChatFormat, tokenizer: CharTokenizer, qa_task: Task) -> None:
    gen = CountingGenerator(tokenizer, ["<answer>4</answer>"])
    batch = _run(chat, gen, [qa_task], CalculatorEnv, group_size=4)
    assert len(gen.prompts) == 1  # one turn: the four members' identical first prompts
    prompt = len(gen.prompts[0][0])
    assert batch.stats.engine["prompt_tokens"] == 4 * prompt  # this rollout's only
    assert batch.stats.engine["prefill_tokens"] == prompt  # one prefill for the group's four members
    metrics = collection_metrics(batch.trajectories, concat_batches([batch, batch]).stats, step_s=1.0)
    assert metrics["engine/prompt_tokens"] == 8 * prompt
    assert metrics["engine/prefill_saved_frac"] == pytest.approx(0.75)
    plain = _run(chat, SpyGenerator(tokenizer, ["<answer>4</answer>"]), [qa_task], CalculatorEnv)
    assert plain.stats.engine == {}
    assert not any(k.startswith("engine/") for k in collection_metrics(plain.trajectories, plain.stats, step_s=1.0))
