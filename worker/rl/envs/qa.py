"""`QASearchEnv`: multi-hop question answering with a `search` tool over any retriever.

Reward: exact match (weight 1) plus a small format bonus (weight 0.1 by
default, so a well-formed but wrong episode beats a malformed one without
outranking a correct answer); F1, tool use, tool errors and retrieval recall
are logged as weight-0 metrics.
"""

from __future__ import annotations

import re
from typing import Protocol

from worker.rl.envs.base import DEFAULT_SYSTEM_PROMPT, EnvConfig, ToolEnv
from worker.rl.rewards.functions import called_tool, exact_match, f1, format_reward, tool_error_penalty
from worker.rl.rewards.rubric import RewardTerm, Rubric
from worker.rl.tools.search import SearchTool, retrieval_recall
from worker.rl.types import JSONValue, Message, Passage, Task, Trajectory

FORCE_FIRST_SEARCH_PREFILL = '<tool_call>{"name": "search", "arguments": {"query": "'
"""`EnvConfig.first_turn_prefill` that makes the first turn a search call (the model writes the query)."""

QA_SYSTEM_PROMPT = (
    "Answer the question. Search for a name in the question and read the result. If it does not hold the"
    " answer, search for the name it gives you. Then write only the short answer inside"
    " <{answer_tag}></{answer_tag}> tags.\n"
    "\n"
    "Question: In which city was the founder of Brimco Works born?\n"
    '<tool_call>{{"name": "search", "arguments": {{"query": "Brimco Works"}}}}</tool_call>\n'
    "<tool_response>Doc 1 (Title: Brimco Works) Brimco Works is a company founded by Tal Vennor"
    " in 1901.</tool_response>\n"
    '<tool_call>{{"name": "search", "arguments": {{"query": "Tal Vennor"}}}}</tool_call>\n'
    "<tool_response>Doc 1 (Title: Tal Vennor) Tal Vennor was an engineer born in the city of"
    " Velmark.</tool_response>\n"
    "<{answer_tag}>Velmark</{answer_tag}>\n"
    "\n"
    "Question: Who was born earlier, Odo Prane or Mira Solt?\n"
    '<tool_call>{{"name": "search", "arguments": {{"query": "Odo Prane"}}}}</tool_call>\n'
    "<tool_response>Doc 1 (Title: Odo Prane) Odo Prane (12 May 1850 - 1921) was a baker.</tool_response>\n"
    '<tool_call>{{"name": "search", "arguments": {{"query": "Mira Solt"}}}}</tool_call>\n'
    "<tool_response>Doc 1 (Title: Mira Solt) Mira Solt (3 June 1872 - 1950) was a painter.</tool_response>\n"
    "<{answer_tag}>Odo Prane</{answer_tag}>"
)
"""The multi-hop QA prompt: two fictional worked episodes (a bridge and a comparison, two searches each) and
no tool-schema block, since the examples teach the call; SmolLM2-135M copies a schema block's keys into its
calls (`"type": "function", "description": ...`) and never closes them. It still copies the examples' names
(a quarter of its held-out answers are "Mira Solt" or "Odo Prane", docs/table3): the next prompt to measure."""

DEMO_SYSTEM_PROMPT = (
    "Answer the question. First search for the name in the question, then answer from the search result.\n"
    "\n"
    "Question: Who founded Brimco Works?\n"
    '<tool_call>{{"name": "search", "arguments": {{"query": "Brimco Works"}}}}</tool_call>\n'
    "<tool_response>Doc 1 (Title: Brimco Works) Brimco Works is a company founded by Tal Vennor"
    " in the year 1901.</tool_response>\n"
    "<{answer_tag}>Tal Vennor</{answer_tag}>\n"
    "\n"
    "Question: In which city was Odo Prane born?\n"
    '<tool_call>{{"name": "search", "arguments": {{"query": "Odo Prane"}}}}</tool_call>\n'
    "<tool_response>Doc 1 (Title: Odo Prane) Odo Prane was a baker. Odo Prane was born in the city of Velmark"
    " in the year 1850.</tool_response>\n"
    "<{answer_tag}>Velmark</{answer_tag}>"
)
"""Compact two-shot prompt of the built-in demo task (~250 prompt tokens with the question, no tool-schema
block): on a 2-core CPU the prompt's length dominates both rollout prefill and the update's forward pass."""

_TITLE = re.compile(r"^Doc \d+ \(Title: (.*?)\) ", flags=re.MULTILINE)


class Retriever(Protocol):
    """Anything that can search passages (BM25, dense, a remote service, an in-memory list)."""

    def search(self, query: str, top_k: int) -> list[Passage]: ...


def retrieved_recall(trajectory: Trajectory, task: Task) -> float:
    """Share of the gold supporting titles that appeared in the search results shown."""
    titles = [t for turn in trajectory.turns if turn.role == "tool" for t in _TITLE.findall(turn.text)]
    return retrieval_recall(titles, task.supporting_titles)


def qa_rubric(format_weight: float = 0.1, tool_error_weight: float = 0.0) -> Rubric:
    """The default QA rubric (see the module docstring)."""
    return Rubric(
        [
            RewardTerm("exact_match", exact_match, 1.0),
            RewardTerm("f1", f1, 0.0),
            RewardTerm("format", format_reward, format_weight),
            RewardTerm("tool_error_penalty", tool_error_penalty, tool_error_weight),
            RewardTerm("called_tool", called_tool, 0.0),
            RewardTerm("retrieval_recall", retrieved_recall, 0.0),
        ]
    )


class QASearchEnv(ToolEnv):
    """Answer a (multi-hop) question, searching the retriever as often as `max_turns` allows."""

    def __init__(
        self,
        retriever: Retriever,
        *,
        top_k: int = 3,
        max_passage_chars: int = 400,
        config: EnvConfig | None = None,
        rubric: Rubric | None = None,
        show_tool_schemas: bool = False,
    ) -> None:
        self.show_tool_schemas = show_tool_schemas
        # SearchTool only calls `search`; its Retriever protocol also lists `search_batch`, which we don't need.
        self.search_tool = SearchTool(retriever, top_k=top_k, max_passage_chars=max_passage_chars)  # type: ignore[arg-type]
        super().__init__([self.search_tool], config=config, rubric=rubric)

    def default_rubric(self) -> Rubric:
        return qa_rubric()

    @property
    def tool_schemas(self) -> list[dict[str, JSONValue]]:
        """The search schema, or none when the system prompt alone teaches the call (`show_tool_schemas=False`)."""
        return super().tool_schemas if self.show_tool_schemas else []

    def system_prompt(self, task: Task) -> str:
        """The QA prompt, unless the config carries a custom `system_prompt`."""
        custom = self.config.system_prompt != DEFAULT_SYSTEM_PROMPT
        return (self.config.system_prompt if custom else QA_SYSTEM_PROMPT).format(answer_tag=self.config.answer_tag)

    def initial_messages(self, task: Task) -> list[Message]:
        return [Message("system", self.system_prompt(task)), Message("user", f"Question: {task.question}")]

    def reset(self, task: Task, seed: int | None = None) -> list[Message]:
        self.search_tool.reset()
        return super().reset(task, seed)
