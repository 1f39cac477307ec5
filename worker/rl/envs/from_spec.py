"""`env_from_spec`: the one way from an `EnvSpec` to a `ToolEnv` (train, rollout, eval, check, CLI).

User tools and user reward functions are executed by an injected `tool_runner(key, arguments)`
(the worker passes its sandboxed tool-server pool; the core never runs user code itself), so
`worker.rl` stays free of the worker glue. A runner with `call_batch(key, items)` gets each user
reward term's whole batch in one call (`run_batch`). Data, corpus, retriever and rubric are built
once per run (`load_env_data`, `build_retriever`, `build_rubric`) and shared by every env the factory
makes, so the rollout scores a step's episodes in one batch.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from worker.rl.envs.base import EnvConfig, ToolEnv
from worker.rl.envs.qa import retrieved_recall
from worker.rl.envs.spec import MAX_TOOL_RESULT_BYTES, TOOL_ALIASES, EnvSpec, RewardSpec, SpecError, ToolSpec
from worker.rl.rewards import functions as rf
from worker.rl.rewards.rubric import RewardTerm, Rubric, StepRewardTerm
from worker.rl.tools.base import FunctionTool, ToolError
from worker.rl.tools.calculator import calculator
from worker.rl.tools.search import Retriever, SearchTool, build_index, corpus_from_tasks
from worker.rl.types import JSONValue, Message, Passage, Task, Trajectory

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "You are a helpful assistant that solves the user's problem step by step, calling the tools when useful. "
    "When you know the answer, write only the answer inside <{answer_tag}></{answer_tag}> tags."
)


class RunOutcome(Protocol):
    """What a tool runner returns (the worker's `SandboxResult` has this shape)."""

    @property
    def ok(self) -> bool: ...
    @property
    def result(self) -> Any: ...
    @property
    def error(self) -> str | None: ...


ToolRunner = Callable[[str, dict[str, Any]], RunOutcome]
"""`runner(key, arguments) -> outcome`: runs the user code registered under `key` with keyword `arguments`.
A runner may also have `call_batch(key, items) -> outcomes` (one round trip for many calls, see `run_batch`)."""


def run_batch(runner: ToolRunner, key: str, items: Sequence[dict[str, Any]]) -> list[RunOutcome]:
    """Call `key` once per item: through `runner.call_batch` when it has one (one round trip), else one by one."""
    if not items:
        return []
    batch = getattr(runner, "call_batch", None)
    if not callable(batch):
        return [runner(key, dict(item)) for item in items]
    outcomes = list(batch(key, [dict(item) for item in items]))
    if len(outcomes) != len(items):
        raise RuntimeError(f"the tool runner gave {len(outcomes)} results for {len(items)} calls of {key}")
    return outcomes


BUILTIN_REWARD_FNS: dict[str, Callable[[Trajectory, Task], float]] = {
    "exact_match": rf.exact_match,
    "cover_exact_match": rf.cover_exact_match,
    "f1": rf.f1,
    "format": rf.format_reward,
    "called_tool": rf.called_tool,
    "tool_error_penalty": rf.tool_error_penalty,
    "retrieval_recall": retrieved_recall,
}


@dataclass(frozen=True)
class EnvData:
    """Train and held-out tasks (disjoint) and the corpus the search tool indexes."""

    train: list[Task]
    heldout: list[Task]
    passages: list[Passage]


def _user_tool(spec: ToolSpec, runner: ToolRunner, timeout_s: float) -> FunctionTool:
    key = str(spec.key)

    def call(**arguments: Any) -> Any:
        outcome = runner(key, dict(arguments))
        if not outcome.ok:
            raise ToolError(outcome.error or "the tool failed without a message")
        return outcome.result

    params: dict[str, JSONValue] = dict(spec.parameters) or {"type": "object", "properties": {}}
    # the runner enforces the real limit; the toolset's own timeout is a backstop a little later
    return FunctionTool(spec.name, spec.description, params, call, timeout_s=timeout_s + 2.0)


def _reward_value(outcome: RunOutcome) -> float | Exception:
    if not outcome.ok:
        return RuntimeError(outcome.error or "the reward function failed without a message")
    value = outcome.result
    if isinstance(value, bool) or not isinstance(value, int | float):
        return TypeError(f"reward function returned {type(value).__name__} {value!r}; return a float")
    return float(value)


class UserReward:
    """A `kind="trajectory"` user function `reward(answer, gold, trajectory)`, one runner batch per rollout."""

    def __init__(self, spec: RewardSpec, runner: ToolRunner) -> None:
        self.key, self.runner = str(spec.key), runner

    def score_batch(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[float | Exception]:
        items = [
            {"answer": t.final_answer or "", "gold": list(k.answers), "trajectory": slim_trajectory(t)}
            for t, k in zip(trajectories, tasks, strict=True)
        ]
        return [_reward_value(o) for o in run_batch(self.runner, self.key, items)]

    def __call__(self, trajectory: Trajectory, task: Task) -> float:
        value = self.score_batch([trajectory], [task])[0]
        if isinstance(value, Exception):
            raise value
        return value


class UserStepReward:
    """A `kind="step"` user function `reward(step, task)`: every tool turn of the batch in one runner call."""

    def __init__(self, spec: RewardSpec, runner: ToolRunner) -> None:
        self.key, self.runner = str(spec.key), runner

    def score_steps(self, trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> list[dict[int, Any]]:
        where: list[tuple[int, int]] = []
        items: list[dict[str, Any]] = []
        for i, (traj, task) in enumerate(zip(trajectories, tasks, strict=True)):
            task_view = {"id": task.id, "question": task.question, "answers": list(task.answers)}
            for step in tool_steps(traj):
                where.append((i, int(step["index"])))
                items.append({"step": step, "task": task_view})
        rows: list[dict[int, Any]] = [{} for _ in trajectories]
        for (i, turn), outcome in zip(where, run_batch(self.runner, self.key, items), strict=True):
            rows[i][turn] = _reward_value(outcome)
        return rows


def tool_steps(trajectory: Trajectory) -> list[dict[str, Any]]:
    """What a step reward function sees of each assistant turn that called tools: its index among the
    assistant turns, its text, its calls and their results (in call order)."""
    steps: list[dict[str, Any]] = []
    index = -1
    for turn in trajectory.turns:
        if turn.role == "assistant":
            index += 1
            if turn.tool_calls:
                calls = [{"name": c.name, "arguments": dict(c.arguments)} for c in turn.tool_calls]
                steps.append({"index": index, "text": turn.text, "calls": calls, "results": []})
        elif turn.role == "tool" and turn.name is not None and steps and steps[-1]["index"] == index:
            steps[-1]["results"].append({"name": turn.name, "content": turn.text, "error": bool(turn.tool_error)})
    return steps


def slim_trajectory(trajectory: Trajectory) -> dict[str, Any]:
    """What a user reward function sees: the turns' text (no token ids), the answer and call counts."""
    turns = [
        {"role": t.role, "text": t.text, "name": t.name, "tool_error": bool(t.tool_error)} for t in trajectory.turns
    ]
    return {
        "task_id": trajectory.task_id,
        "final_answer": trajectory.final_answer,
        "turns": turns,
        "num_tool_calls": trajectory.num_tool_calls,
        "finish_reason": trajectory.finish_reason,
    }


def build_rubric(spec: EnvSpec, runner: ToolRunner | None) -> Rubric:
    terms: list[RewardTerm] = []
    step_terms: list[StepRewardTerm] = []
    for term in spec.rubric:
        if term.is_reward_model:
            continue  # scored per step in batches by the trainer (`task.reward_models` of the resolved config)
        if term.builtin is not None:
            terms.append(RewardTerm(term.name, BUILTIN_REWARD_FNS[term.builtin], term.weight))
            continue
        if runner is None:
            raise SpecError(f"rubric.{term.name} is a user reward function; pass a tool_runner to run it")
        if term.is_step:
            step_terms.append(StepRewardTerm(term.name, UserStepReward(term, runner), term.weight))
        else:
            terms.append(RewardTerm(term.name, UserReward(term, runner), term.weight))
    return Rubric(terms, step_terms)


def forced_call_prefill(tool_name: str, parameters: Mapping[str, Any]) -> str:
    """The opening of a call to `tool_name` up to the value of its first string argument."""
    opening = '<tool_call>{"name": "' + tool_name + '", "arguments": {'
    props = parameters.get("properties") or {}
    required = list(parameters.get("required") or props)
    first = next((p for p in required if (props.get(p) or {}).get("type") == "string"), None)
    return opening + (f'"{first}": "' if first else "")


class SpecEnv(ToolEnv):
    """A `ToolEnv` whose prompt, prefill and schema display come from an `EnvSpec`."""

    def __init__(self, spec: EnvSpec, tools: Sequence[Any], *, config: EnvConfig, rubric: Rubric) -> None:
        self.spec = spec
        self._search = [t for t in tools if isinstance(t, SearchTool)]
        super().__init__(tools, config=config, rubric=rubric)

    @property
    def tool_schemas(self) -> list[dict[str, JSONValue]]:
        return super().tool_schemas if self.spec.show_tool_schemas else []

    def system_prompt(self, task: Task) -> str:
        return (self.spec.system_prompt or DEFAULT_PROMPT).replace("{answer_tag}", self.config.answer_tag)

    def initial_messages(self, task: Task) -> list[Message]:
        user = self.spec.question_template.replace("{question}", task.question)
        return [Message("system", self.system_prompt(task)), Message("user", user)]

    def reset(self, task: Task, seed: int | None = None) -> list[Message]:
        for search in self._search:
            search.reset()
        return super().reset(task, seed)


def _tools(spec: EnvSpec, runner: ToolRunner | None, retriever: Retriever | None) -> list[Any]:
    tools: list[Any] = []
    for t in spec.tools:
        builtin = TOOL_ALIASES.get(t.builtin or "", t.builtin)
        if builtin == "search":
            if retriever is None:
                raise SpecError(f"tools.{t.name}: the search tool needs a corpus; attach one or give tasks context")
            top_k, chars = int(t.params.get("top_k", 3)), int(t.params.get("max_passage_chars", 400))
            search = SearchTool(retriever, top_k=top_k, max_passage_chars=chars)
            search.name = t.name
            tools.append(search)
        elif builtin == "calculator":
            tools.append(FunctionTool(t.name, calculator.description, calculator.parameters, calculator.fn))
        else:
            if runner is None:
                raise SpecError(f"tools.{t.name} is a user tool; pass a tool_runner to run it")
            tools.append(_user_tool(t, runner, spec.limits.tool_timeout_s))
    return tools


def env_config_of(spec: EnvSpec) -> EnvConfig:
    prefill = spec.prefill
    first = prefill.first_turn_prefill
    if prefill.force_first_call:
        tool_ = next(t for t in spec.tools if t.name == prefill.force_first_call)
        params = tool_.parameters if tool_.key else {"properties": {"query": {"type": "string"}}}
        if tool_.builtin == "calculator":
            params = calculator.parameters
        first = forced_call_prefill(tool_.name, params)
    return EnvConfig(
        max_turns=spec.limits.max_turns,
        answer_tag=spec.answer_tag,
        first_turn_prefill=first,
        first_turn_prefill_turns=prefill.prefill_turns,
        answer_prefill_after_tool=f"<{spec.answer_tag}>" if prefill.answer_after_tool else "",
        answer_prefill_on_last_turn=prefill.answer_on_last_turn,
    )


def env_from_spec(
    spec: EnvSpec,
    *,
    tool_runner: ToolRunner | None = None,
    retriever: Retriever | None = None,
    rubric: Rubric | None = None,
) -> ToolEnv:
    """A fresh env of `spec`; user tools and rewards go through `tool_runner`, search through `retriever`
    (`rubric`: a shared one built by `build_rubric`, else a new one)."""
    tools = _tools(spec, tool_runner, retriever)
    env = SpecEnv(spec, tools, config=env_config_of(spec), rubric=rubric or build_rubric(spec, tool_runner))
    env.toolset.max_result_bytes = MAX_TOOL_RESULT_BYTES
    return env


def env_factory(
    spec: EnvSpec,
    *,
    tool_runner: ToolRunner | None = None,
    passages: Sequence[Passage] = (),
    index_cache_dir: Path | None = None,
) -> Callable[[], ToolEnv]:
    """A factory of fresh envs sharing one retriever (built once, cached by corpus hash) and one rubric (so a
    rollout scores all of its episodes in one batch per term)."""
    retriever = build_retriever(spec, passages, index_cache_dir)
    rubric = build_rubric(spec, tool_runner)
    env_from_spec(spec, tool_runner=tool_runner, retriever=retriever, rubric=rubric).close()  # fail early
    return lambda: env_from_spec(spec, tool_runner=tool_runner, retriever=retriever, rubric=rubric)


def build_retriever(spec: EnvSpec, passages: Sequence[Passage], cache_dir: Path | None) -> Retriever | None:
    """The index of `spec.corpus.retriever` over `passages` (cached under `cache_dir`), or None without search."""
    needs_search = any(TOOL_ALIASES.get(t.builtin or "", t.builtin) == "search" for t in spec.tools)
    if not needs_search:
        return None
    if not passages:
        raise SpecError("the search tool has no documents: attach a corpus or use tasks that carry context")
    return build_index(spec.corpus.retriever, list(passages), cache_dir=cache_dir)


def read_corpus(path: str | Path) -> list[Passage]:
    """A corpus file: JSONL (one {title, text} per line) or CSV with title,text columns."""
    p = Path(path)
    rows: list[Mapping[str, Any]] = []
    if p.suffix.lower() == ".csv":
        with p.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        with p.open(encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    out = []
    for i, row in enumerate(rows):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"{p}: record {i}: field 'text' must be a non-empty string")
        out.append(Passage(title=str(row.get("title") or ""), text=text, id=str(row.get("id") or f"doc-{i}")))
    return out


def load_env_data(spec: EnvSpec) -> EnvData:
    """The spec's tasks split (seeded, no overlap) into train and held-out, and its corpus."""
    from worker.rl.data.splits import sample_subset, split_tasks

    d = spec.data
    if d.source == "demo":
        from worker.rl.data.demo_kb import build_demo_dataset

        demo = build_demo_dataset(seed=int(d.location) if d.location.isdigit() else 0)
        train, held = list(demo.train), list(demo.heldout)
        if d.max_hops is not None:
            train = [t for t in train if int(t.metadata.get("num_hops", 1)) <= d.max_hops]
            held = [t for t in held if int(t.metadata.get("num_hops", 1)) <= d.max_hops]
        passages = list(demo.passages)
    else:
        from worker.rl.data.qa_formats import load_qa_tasks

        tasks = load_qa_tasks(d.location, format=None if d.format == "auto" else d.format)
        if len(tasks) < 2:
            raise SpecError(f"data: {d.location} gave {len(tasks)} task(s); need at least 2 for a held-out split")
        train, held = split_tasks(tasks, eval_size=d.heldout_fraction, seed=d.seed)
        if not held:
            train, held = split_tasks(tasks, eval_size=1, seed=d.seed)
        passages = corpus_from_tasks([*train, *held])
    if d.train_size:
        train = sample_subset(train, d.train_size, d.seed)
    if d.eval_size:
        held = sample_subset(held, d.eval_size, d.seed)
    if spec.corpus.location:
        passages = read_corpus(spec.corpus.location)
    return EnvData(train=train, heldout=held, passages=passages)
