"""`CalculatorEnv`: the toy arithmetic task (e.g. "What is 17*23?") with the calculator tool.

Small enough for a tiny model to learn the call → answer loop; used by the
toy config, the smoke tests and `check_env`.
"""

from __future__ import annotations

from worker.rl.envs.base import DEFAULT_SYSTEM_PROMPT, EnvConfig, ToolEnv
from worker.rl.rewards.functions import called_tool, exact_match, format_reward, tool_error_penalty
from worker.rl.rewards.rubric import RewardTerm, Rubric
from worker.rl.tools.calculator import calculator
from worker.rl.types import Task

CALCULATOR_SYSTEM_PROMPT = """You solve arithmetic questions with the `calculator` tool.
Call it like this: <tool_call>{{"name": "calculator", "arguments": {{"expression": "2*(3+4)"}}}}</tool_call>
Then write only the final number inside <{answer_tag}></{answer_tag}> tags, e.g. <{answer_tag}>14</{answer_tag}>."""


class CalculatorEnv(ToolEnv):
    """Arithmetic questions; tasks look like `Task(id, "What is 17*23?", answers=("391",))`."""

    def __init__(self, *, config: EnvConfig | None = None, rubric: Rubric | None = None) -> None:
        super().__init__([calculator], config=config, rubric=rubric)

    def system_prompt(self, task: Task) -> str:
        """The calculator prompt, unless the config carries a custom `system_prompt`."""
        custom = self.config.system_prompt != DEFAULT_SYSTEM_PROMPT
        template = self.config.system_prompt if custom else CALCULATOR_SYSTEM_PROMPT
        return template.format(answer_tag=self.config.answer_tag)

    def default_rubric(self) -> Rubric:
        """Exact match plus a 0.1 format bonus; tool use and errors logged."""
        return Rubric(
            [
                RewardTerm("exact_match", exact_match, 1.0),
                RewardTerm("format", format_reward, 0.1),
                RewardTerm("called_tool", called_tool, 0.0),
                RewardTerm("tool_error_penalty", tool_error_penalty, 0.0),
            ]
        )
