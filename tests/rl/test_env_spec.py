"""`EnvSpec` and `env_from_spec`: user tools and rewards through the runner, prefill, data split, presets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.rl.conftest import CharTokenizer
from worker.rl.envs.checker import check_env
from worker.rl.envs.from_spec import env_from_spec, forced_call_prefill, load_env_data, read_corpus
from worker.rl.envs.local_runner import LocalOutcome, LocalToolRunner
from worker.rl.envs.spec import MAX_TOOL_RESULT_BYTES, EnvSpec, PrefillSpec, RewardSpec, SpecError, ToolSpec
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.rollout import RolloutLimits, collect_trajectories
from worker.rl.types import Task

TOOL_SOURCE = '''
def km_to_miles(km: float) -> float:
    """Convert kilometres to miles.

    Args:
        km: Distance in kilometres.
    """
    return round(km * 0.621371, 2)
'''
REWARD_SOURCE = """
def reward(answer: str, gold: list[str], trajectory: dict) -> float:
    return 1.0 if trajectory["num_tool_calls"] > 0 and answer.strip() in gold else 0.0
"""
SCHEMA = {"type": "object", "properties": {"km": {"type": "number"}}, "required": ["km"]}
CALL = '<tool_call>{"name": "km_to_miles", "arguments": {"km": 10}}</tool_call>'


def _spec(**overrides: Any) -> EnvSpec:
    data: dict[str, Any] = {
        "name": "units",
        "tools": [
            {
                "name": "km_to_miles",
                "key": "tool-1-v1",
                "description": "Convert km to miles.",
                "parameters": SCHEMA,
                "source": TOOL_SOURCE,
            }
        ],
        "rubric": [
            {"name": "exact_match", "weight": 1.0, "builtin": "exact_match"},
            {"name": "used_tool", "weight": 0.5, "key": "reward-1", "source": REWARD_SOURCE},
        ],
        "limits": {"max_turns": 3},
        "system_prompt": "Use the tool. Answer in <{answer_tag}></{answer_tag}>.",
    }
    data.update(overrides)
    return EnvSpec.from_dict(data)


class RecordingRunner:
    """Wraps a runner and records every call (key, arguments)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def __call__(self, key: str, arguments: dict[str, Any]) -> Any:
        self.calls.append((key, arguments))
        return self.inner(key, arguments)


def _rollout(spec: EnvSpec, runner: Any, replies: list[str], max_total_tokens: int = 20_000) -> Any:
    tokenizer = CharTokenizer()
    gen = ScriptedGenerator(tokenizer, replies)
    task = Task(id="t1", question="How many miles are 10 km?", answers=("6.21",))
    params = SamplingParams(max_new_tokens=400, temperature=1.0)
    limits = RolloutLimits(max_turns=3, max_new_tokens_per_turn=400, max_total_tokens=max_total_tokens)
    return collect_trajectories(
        lambda: env_from_spec(spec, tool_runner=runner),
        gen,
        ChatFormat(tokenizer),
        [task],
        group_size=1,
        params=params,
        limits=limits,
    )


def test_spec_round_trips_and_names_bad_fields() -> None:
    spec = _spec()
    assert EnvSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(SpecError, match=r"limits: unknown key\(s\) max_turn\b"):
        _spec(limits={"max_turn": 3})
    with pytest.raises(SpecError, match=r"rubric\.x: builtin 'nope'"):
        _spec(rubric=[{"name": "x", "builtin": "nope"}])
    with pytest.raises(SpecError, match="force_first_call 'search' must name one of"):
        _spec(prefill={"force_first_call": "search"})


def test_user_tool_and_reward_run_through_the_runner() -> None:
    spec = _spec()
    runner = RecordingRunner(LocalToolRunner.from_spec(spec))
    batch = _rollout(spec, runner, [CALL, "<answer>6.21</answer>"])
    traj = batch.trajectories[0]
    tool_turns = [t for t in traj.turns if t.role == "tool"]
    assert [(t.name, t.text) for t in tool_turns] == [("km_to_miles", "6.21")]
    assert traj.reward_breakdown == {"exact_match": 1.0, "used_tool": 1.0}
    assert traj.reward == pytest.approx(1.5)
    assert runner.calls[0] == ("tool-1-v1", {"km": 10})
    reward_key, reward_args = runner.calls[1]
    assert reward_key == "reward-1"
    assert reward_args["answer"] == "6.21"
    assert reward_args["gold"] == ["6.21"]
    assert batch.stats.tool_metrics["tool/km_to_miles/calls"] == 1.0


def test_failing_user_code_is_a_tool_error_and_a_counted_reward_error() -> None:
    def broken(key: str, arguments: dict[str, Any]) -> LocalOutcome:
        return LocalOutcome(False, None, "time limit exceeded: the tool ran longer than 1 s")

    batch = _rollout(_spec(), broken, [CALL, "<answer>6.21</answer>"])
    traj = batch.trajectories[0]
    tool_turn = next(t for t in traj.turns if t.role == "tool")
    assert tool_turn.tool_error
    assert "time limit exceeded" in tool_turn.text
    assert batch.stats.tool_metrics["tool/km_to_miles/errors"] == 1.0
    assert "used_tool" not in traj.reward_breakdown  # never silently 0
    assert traj.metrics["reward/used_tool/errors"] == 1.0


def test_huge_tool_results_are_truncated_with_a_marker_and_counted() -> None:
    def huge(key: str, arguments: dict[str, Any]) -> LocalOutcome:
        return LocalOutcome(True, "x" * (MAX_TOOL_RESULT_BYTES * 2), None)

    spec = _spec(rubric=[{"name": "exact_match", "builtin": "exact_match"}])
    batch = _rollout(spec, huge, [CALL, "<answer>6.21</answer>"], max_total_tokens=1_000_000)
    tool_turn = next(t for t in batch.trajectories[0].turns if t.role == "tool")
    assert "[truncated: the result was 524288 bytes" in tool_turn.text
    assert len(tool_turn.text.encode()) < MAX_TOOL_RESULT_BYTES + 200
    assert batch.stats.tool_metrics["tool/km_to_miles/truncated"] == 1.0


def test_forced_first_call_and_answer_prefill() -> None:
    spec = _spec(prefill={"force_first_call": "km_to_miles", "answer_after_tool": True})
    env = env_from_spec(spec, tool_runner=LocalToolRunner.from_spec(spec))
    env.reset(Task(id="t", question="q", answers=("1",)))
    assert env.prefill(0) == '<tool_call>{"name": "km_to_miles", "arguments": {'
    env.step(CALL)
    assert env.prefill(1) == "<answer>"
    assert forced_call_prefill("search", {"properties": {"query": {"type": "string"}}}).endswith('{"query": "')


def test_check_env_passes_on_a_spec_env() -> None:
    spec = _spec()
    env = env_from_spec(spec, tool_runner=LocalToolRunner.from_spec(spec))
    report = check_env(env, Task(id="t", question="q", answers=("1",)))
    assert report.ok, report.failures


def test_spec_without_runner_refuses_user_code() -> None:
    with pytest.raises(SpecError, match="pass a tool_runner"):
        env_from_spec(_spec())


def test_file_data_heldout_split_and_corpus(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": f"question {i}?", "answer": [str(i)]}) + "\n" for i in range(20))
    )
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"title": "Paris", "text": "Paris is in France."}) + "\n")
    spec = _spec(
        data={"source": "file", "location": str(tasks), "format": "flat", "heldout_fraction": 0.25, "seed": 3},
        corpus={"location": str(corpus)},
        tools=[{"name": "search", "builtin": "search"}],
    )
    data = load_env_data(spec)
    assert (len(data.train), len(data.heldout)) == (15, 5)
    assert not {t.id for t in data.train} & {t.id for t in data.heldout}
    assert load_env_data(spec).heldout == data.heldout  # seeded
    assert [p.title for p in data.passages] == ["Paris"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "x"}) + "\n")
    with pytest.raises(SpecError, match=r"bad.jsonl: record 0: field 'text'"):
        read_corpus(bad)


def test_preset_spec_matches_the_quickstart_env() -> None:
    from worker.rl.envs.qa import DEMO_SYSTEM_PROMPT, FORCE_FIRST_SEARCH_PREFILL
    from worker.rl.training.build import load_task_data, make_env_factory, spec_from_config
    from worker.rl.training.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "quickstart.toml")
    spec = spec_from_config(config)
    assert spec.prefill == PrefillSpec(force_first_call="search", answer_after_tool=True)
    assert [r.name for r in spec.rubric][:3] == ["exact_match", "f1", "format"]
    data = load_task_data(config.task)
    env = make_env_factory(config, data.passages)()
    task = data.eval[0]
    messages = env.reset(task)
    assert messages[0].content == DEMO_SYSTEM_PROMPT.format(answer_tag="answer")
    assert messages[1].content == f"Question: {task.question}"
    assert env.prefill(0) == FORCE_FIRST_SEARCH_PREFILL
    assert env.tool_schemas == []
    assert isinstance(spec.tools[0], ToolSpec)
    assert isinstance(spec.rubric[0], RewardSpec)


def test_reward_errors_are_counted_in_the_step_metrics() -> None:
    from worker.rl.training.metrics import reward_metrics

    def broken(key: str, arguments: dict[str, Any]) -> LocalOutcome:
        if key == "reward-1":
            return LocalOutcome(False, None, "ValueError: no")
        return LocalOutcome(True, "6.21", None)

    batch = _rollout(_spec(), broken, [CALL, "<answer>6.21</answer>"])
    metrics = reward_metrics(batch.trajectories)
    assert metrics["reward/used_tool/errors"] == 1.0
    assert "reward/used_tool" not in metrics


def test_tool_network_and_files_round_trip_and_resolve_beside_the_file(tmp_path: Path) -> None:
    from worker.rl.envs.spec import load_spec_file

    tool = {
        "name": "lookup",
        "key": "tool-1-v1",
        "source": "def lookup():\n    return 1\n",
        "network": ["api.example.com"],
        "files": {"prices.jsonl": "data/prices.jsonl"},
    }
    (tmp_path / "env.json").write_text(json.dumps({"name": "e", "tools": [tool]}))
    spec = load_spec_file(tmp_path / "env.json")
    assert spec.tools[0].network == ("api.example.com",)
    assert spec.tools[0].files == {"prices.jsonl": str((tmp_path / "data" / "prices.jsonl").resolve())}
    assert EnvSpec.from_dict(spec.to_dict()) == spec
    assert ToolSpec("lookup", key="k").network == ()  # the default: no network, no files
    with pytest.raises(SpecError, match="network and files are for user tools"):
        ToolSpec("search", builtin="search", network=("api.example.com",))
    with pytest.raises(SpecError, match="files must map names"):
        ToolSpec("lookup", key="k", files={"../x": "/etc/passwd"})
