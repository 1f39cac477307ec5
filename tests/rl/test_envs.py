"""ToolEnv contract, hooks, the registry, and check_env over every registered env."""

from __future__ import annotations

import pytest

from tests.rl.conftest import ListRetriever
from worker.rl.envs.base import EnvConfig, ToolEnv
from worker.rl.envs.checker import EnvCheckError, check_env
from worker.rl.envs.qa import FORCE_FIRST_SEARCH_PREFILL, QASearchEnv
from worker.rl.envs.registry import list_envs, make, register
from worker.rl.tools.base import ToolResult, tool
from worker.rl.types import Message, Task

CALL = '<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


def _env_kwargs(name: str, retriever: ListRetriever) -> dict[str, object]:
    return {"retriever": retriever} if name == "qa_search" else {}


def test_registry_lists_builtin_envs_and_rejects_unknown_names() -> None:
    assert {"calculator", "qa_search"} <= set(list_envs())
    with pytest.raises(ValueError, match=r"registered: .*calculator"):
        make("nope")
    with pytest.raises(ValueError, match="module:ClassName"):
        register("bad", "no_colon")


@pytest.mark.parametrize("name", list_envs())
def test_check_env_passes_for_every_registered_env(
    name: str, retriever: ListRetriever, qa_task: Task, calc_task: Task
) -> None:
    env = make(name, **_env_kwargs(name, retriever))
    report = check_env(env, qa_task if name == "qa_search" else calc_task, strict=True)
    assert report.ok
    assert len(report.passed) == 8


class BrokenEnv(ToolEnv):
    """Violates the contract: answers do not terminate and reset is random."""

    resets = 0

    def initial_messages(self, task: Task) -> list[Message]:
        self.resets += 1
        return [Message("user", f"{task.question} (attempt {self.resets})")]

    def step(self, assistant_text: str):  # type: ignore[no-untyped-def]
        result = super().step(assistant_text.replace("answer", "x"))
        self._done = False
        return result


def test_check_env_reports_every_failure(calc_task: Task) -> None:
    report = check_env(BrokenEnv([]), calc_task)
    assert not report.ok
    joined = "\n".join(report.failures)
    assert "reset is deterministic" in joined
    assert "final answer terminates" in joined
    with pytest.raises(EnvCheckError, match="failed 2 check"):
        check_env(BrokenEnv([]), calc_task, strict=True)


def test_calculator_episode(calc_task: Task) -> None:
    env = make("calculator")
    messages = env.reset(calc_task, seed=1)
    assert [m.role for m in messages] == ["system", "user"]
    assert "calculator" in messages[0].content
    assert env.tool_schemas[0]["function"]["name"] == "calculator"
    step = env.step(CALL.format(name="calculator", args='{"expression": "17*23"}'))
    assert step.observation == [Message("tool", "391", name="calculator")]
    assert (step.terminated, step.truncated, step.info.tool_errors) == (False, False, 0)
    done = env.step("<answer>391</answer>")
    assert done.terminated
    assert done.info.final_answer == "391"
    assert done.info.finish_reason == "answer"
    with pytest.raises(RuntimeError, match="reset"):
        env.step("more")


def test_no_call_ends_or_nudges(calc_task: Task) -> None:
    env = make("calculator")
    env.reset(calc_task)
    ended = env.step("I think it is big.")
    assert ended.terminated
    assert ended.info.finish_reason == "no_tool_call"
    nudging = make("calculator", config=EnvConfig(end_on_no_tool_call=False, max_turns=2))
    nudging.reset(calc_task)
    nudge = nudging.step("hmm")
    assert not nudge.terminated
    assert nudge.observation[0].role == "user"
    assert "<answer>" in nudge.observation[0].content
    assert nudging.step("hmm").truncated


def test_step_reward_sums_tool_rewards_and_hook(calc_task: Task) -> None:
    @tool
    def bonus() -> ToolResult:
        """Give a reward."""
        return ToolResult("ok", reward=0.25)

    class ShapedEnv(ToolEnv):
        def step_reward(self, assistant_text, parsed, results):  # type: ignore[no-untyped-def]
            return 0.5 if parsed.calls else 0.0

    env = ShapedEnv([bonus])
    env.reset(calc_task)
    result = env.step(CALL.format(name="bonus", args="{}") * 2)
    assert result.reward == pytest.approx(1.0)


def test_prefill_hooks(qa_task: Task, retriever: ListRetriever) -> None:
    config = EnvConfig(first_turn_prefill=FORCE_FIRST_SEARCH_PREFILL, answer_prefill_after_tool="<answer>")
    env = QASearchEnv(retriever, config=config)
    env.reset(qa_task)
    assert env.prefill(0) == FORCE_FIRST_SEARCH_PREFILL
    env.step(FORCE_FIRST_SEARCH_PREFILL + 'France capital"}}</tool_call>')
    assert env.prefill(1) == "<answer>"


def test_qa_env_formats_numbered_passages(qa_task: Task, retriever: ListRetriever) -> None:
    env = QASearchEnv(retriever, top_k=2, max_passage_chars=30)
    system, user = env.reset(qa_task)
    assert "<answer>" in system.content
    assert system.content.count('<tool_call>{"name": "search"') == 4, "two worked episodes, two searches each"
    assert env.tool_schemas == [], "the prompt's examples teach the call; no schema block"
    assert user.content == "Question: What is the capital of France?"
    step = env.step(CALL.format(name="search", args='{"query": "capital France"}'))
    lines = step.observation[0].content.splitlines()
    assert lines[0] == "Doc 1 (Title: France) France is a country in Euro..."
    assert lines[1].startswith("Doc 2 (Title: Germany)")
    assert retriever.queries == ["capital France"]


def test_qa_env_reports_parse_and_argument_errors(qa_task: Task, retriever: ListRetriever) -> None:
    env = QASearchEnv(retriever)
    env.reset(qa_task)
    bad_json = env.step('<tool_call>{"name": "search", "arguments": {"query": }</tool_call>')
    assert bad_json.info.parse_error is not None
    assert "could not parse" in bad_json.observation[-1].content
    wrong_args = env.step(CALL.format(name="search", args='{"q": "x"}'))
    assert wrong_args.info.tool_errors == 1
    assert "unknown argument(s) 'q'" in wrong_args.observation[0].content
    assert env.tool_metrics()["tool/search/errors"] == 1


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [("max_turns", 0, "max_turns"), ("answer_tag", "a b", "answer_tag"), ("call_format", "xml", "hermes")],
)
def test_env_config_validation(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        EnvConfig(**{field: value})  # type: ignore[arg-type]


def test_close_is_idempotent_and_blocks_reset(calc_task: Task) -> None:
    env = make("calculator")
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset(calc_task)
