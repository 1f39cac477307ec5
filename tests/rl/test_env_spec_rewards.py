"""User reward functions in a spec env: step-kind terms feed `step_rewards`, every term is called once per
rollout with the whole batch, and failures are counted per item (never a silent 0)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.rl.conftest import CharTokenizer
from worker.rl.envs.from_spec import env_factory, tool_steps
from worker.rl.envs.local_runner import LocalOutcome, LocalToolRunner
from worker.rl.envs.spec import EnvSpec, RewardSpec, SpecError
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.rollout import RolloutBatch, RolloutLimits, collect_trajectories
from worker.rl.training.metrics import reward_metrics
from worker.rl.types import Task

TOOL = '''
def km_to_miles(km: float) -> float:
    """Convert kilometres to miles."""
    if km < 0:
        raise ValueError("km must be >= 0")
    return round(km * 0.621371, 2)
'''
STEP_REWARD = """
def reward(step: dict, task: dict) -> float:
    return 0.0 if any(r["error"] for r in step["results"]) else 0.5
"""
ANSWER_REWARD = """
def reward(answer: str, gold: list[str], trajectory: dict) -> float:
    return float(answer in gold)
"""
SCHEMA = {"type": "object", "properties": {"km": {"type": "number"}}, "required": ["km"]}
CALL = '<tool_call>{{"name": "km_to_miles", "arguments": {{"km": {km}}}}}</tool_call>'


def _spec(step_source: str = STEP_REWARD, step_weight: float = 2.0) -> EnvSpec:
    return EnvSpec.from_dict(
        {
            "name": "units",
            "tools": [{"name": "km_to_miles", "key": "tool-1", "parameters": SCHEMA, "source": TOOL}],
            "rubric": [
                {"name": "exact_match", "builtin": "exact_match"},
                {"name": "answered", "weight": 0.5, "key": "reward-answer", "source": ANSWER_REWARD},
                {
                    "name": "good_call",
                    "weight": step_weight,
                    "key": "reward-step",
                    "source": step_source,
                    "kind": "step",
                },
            ],
            "limits": {"max_turns": 3},
        }
    )


class CountingRunner:
    """The in-process runner, counting single calls and batch calls per key."""

    def __init__(self, inner: Any, fail_batch: str | None = None) -> None:
        self.inner, self.fail_batch = inner, fail_batch
        self.calls: list[str] = []
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []

    def __call__(self, key: str, arguments: dict[str, Any]) -> Any:
        self.calls.append(key)
        return self.inner(key, arguments)

    def call_batch(self, key: str, items: list[dict[str, Any]]) -> list[Any]:
        self.batches.append((key, items))
        if key == self.fail_batch:
            raise ConnectionError("the sandbox went away")
        return [self.inner(key, item) for item in items]


def _rollout(spec: EnvSpec, runner: Any, replies: list[str], tasks: list[Task], group_size: int = 1) -> RolloutBatch:
    tokenizer = CharTokenizer()
    return collect_trajectories(
        env_factory(spec, tool_runner=runner),
        ScriptedGenerator(tokenizer, replies),
        ChatFormat(tokenizer),
        tasks,
        group_size=group_size,
        params=SamplingParams(max_new_tokens=400, temperature=1.0),
        limits=RolloutLimits(max_turns=3, max_new_tokens_per_turn=400, max_total_tokens=20_000),
    )


TASK = Task(id="t1", question="How many miles are 10 km?", answers=("6.21",))


def test_step_reward_values_reach_step_rewards_and_the_breakdown() -> None:
    spec = _spec()
    runner = CountingRunner(LocalToolRunner.from_spec(spec))
    batch = _rollout(spec, runner, [CALL.format(km=10), CALL.format(km=-1), "<answer>6.21</answer>"], [TASK])
    traj = batch.trajectories[0]
    assert traj.step_rewards == (pytest.approx(2.0 * 0.5), 0.0, 0.0)  # weight x value; a failed call scored 0.0
    assistant = [t for t in traj.turns if t.role == "assistant"]
    assert [t.step_reward for t in assistant] == list(traj.step_rewards)  # the replay's per-turn figures agree
    assert traj.reward_breakdown["good_call"] == pytest.approx(0.25)  # mean over the two tool turns
    assert traj.reward == pytest.approx(1.0 + 0.5)  # step terms stay out of the trajectory total
    items = next(i for k, i in runner.batches if k == "reward-step")
    assert [it["step"]["index"] for it in items] == [0, 1]
    assert items[0]["step"]["calls"] == [{"name": "km_to_miles", "arguments": {"km": 10}}]
    assert items[0]["step"]["results"] == [{"name": "km_to_miles", "content": "6.21", "error": False}]
    assert items[1]["step"]["results"][0]["error"]
    assert items[0]["task"] == {"id": "t1", "question": TASK.question, "answers": ["6.21"]}


def test_failing_step_items_are_counted_one_each_and_add_nothing() -> None:
    source = "def reward(step, task):\n    if step['index'] == 1:\n        raise KeyError('no')\n    return 1.0\n"
    spec = _spec(step_source=source)
    batch = _rollout(
        spec, LocalToolRunner.from_spec(spec), [CALL.format(km=1), CALL.format(km=2), "<answer>6.21</answer>"], [TASK]
    )
    traj = batch.trajectories[0]
    assert traj.step_rewards == (2.0, 0.0, 0.0)
    assert traj.metrics["reward/good_call/errors"] == 1.0
    assert traj.reward_breakdown["good_call"] == 1.0

    def always(key: str, arguments: dict[str, Any]) -> LocalOutcome:
        if key == "reward-step":
            return LocalOutcome(False, None, "time limit exceeded")
        return LocalToolRunner.from_spec(spec)(key, arguments)

    batch = _rollout(spec, always, [CALL.format(km=1), CALL.format(km=2), "<answer>6.21</answer>"], [TASK])
    traj = batch.trajectories[0]
    assert traj.metrics["reward/good_call/errors"] == 2.0  # one per failed tool turn
    assert "good_call" not in traj.reward_breakdown  # never silently 0
    assert traj.step_rewards == (0.0, 0.0, 0.0)
    assert reward_metrics(batch.trajectories)["reward/good_call/errors"] == 2.0


def test_each_user_term_is_one_batch_call_per_rollout() -> None:
    spec = _spec()
    runner = CountingRunner(LocalToolRunner.from_spec(spec))
    tasks = [Task(id=f"t{i}", question=f"{i} km?", answers=("6.21",)) for i in range(3)]
    replies = [CALL.format(km=10), "<answer>6.21</answer>"] * 6
    batch = _rollout(spec, runner, replies, tasks, group_size=2)
    assert len(batch.trajectories) == 6
    assert sorted(k for k, _ in runner.batches) == ["reward-answer", "reward-step"]  # one round trip per term
    sizes = {k: len(items) for k, items in runner.batches}
    assert sizes == {"reward-answer": 6, "reward-step": 6}  # every episode / every tool turn of the step
    assert set(runner.calls) == {"tool-1"}  # the tool calls alone go one by one
    assert all(t.reward_breakdown["answered"] == 1.0 for t in batch.trajectories)


def test_a_batch_that_fails_as_a_whole_counts_every_item() -> None:
    spec = _spec()
    runner = CountingRunner(LocalToolRunner.from_spec(spec), fail_batch="reward-answer")
    tasks = [Task(id=f"t{i}", question=f"{i} km?", answers=("6.21",)) for i in range(2)]
    batch = _rollout(spec, runner, [CALL.format(km=10), "<answer>6.21</answer>"] * 4, tasks, group_size=2)
    assert all(t.metrics["reward/answered/errors"] == 1.0 for t in batch.trajectories)
    assert all("answered" not in t.reward_breakdown for t in batch.trajectories)
    assert reward_metrics(batch.trajectories)["reward/answered/errors"] == 4.0
    assert all(t.reward_breakdown["good_call"] == 0.5 for t in batch.trajectories)  # the other terms still score


def test_tool_steps_pairs_each_call_turn_with_its_results() -> None:
    spec = _spec()
    batch = _rollout(spec, LocalToolRunner.from_spec(spec), ["no call here", "unused"], [TASK])
    assert tool_steps(batch.trajectories[0]) == []  # a turn without calls is not a step for the function


def test_kind_is_validated_and_round_trips() -> None:
    spec = _spec()
    assert EnvSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["rubric"][2]["kind"] == "step"
    assert RewardSpec("r", key="k").kind == "trajectory"
    with pytest.raises(SpecError, match=r"rubric\.r: kind 'per_turn' is not one of trajectory, step"):
        RewardSpec("r", key="k", kind="per_turn")
    with pytest.raises(SpecError, match=r"rubric\.em: kind 'step' is for user reward functions"):
        RewardSpec("em", builtin="exact_match", kind="step")


def test_step_terms_need_process_rewards_on() -> None:
    from worker.rl.training.build import check_step_terms
    from worker.rl.training.config import TrainConfig

    config = TrainConfig()
    with pytest.raises(ValueError, match=r"good_call give process rewards but algorithm.process_reward_weight is 0"):
        check_step_terms(_spec(), config)
    check_step_terms(EnvSpec(name="plain"), config)
