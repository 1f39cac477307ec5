"""Fixtures for the rollout-side RL tests: a char-level tokenizer, tasks, an in-memory retriever."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pytest

from worker.rl.generation.base import Completion, SamplingParams, Tokenizer
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.types import Passage, Task

SPECIALS = ("<pad>", "<|im_start|>", "<|im_end|>")
_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


class CharTokenizer:
    """One id per character (ord + 3); `<|im_start|>`/`<|im_end|>` are single special ids (1, 2)."""

    eos_token_id: int | None = 2
    chat_template: str | None = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        for piece in _SPLIT.split(text):
            if piece in SPECIALS:
                ids.append(SPECIALS.index(piece))
            else:
                ids.extend(ord(c) + len(SPECIALS) for c in piece)
        return ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        out = []
        for t in token_ids:
            if t < len(SPECIALS):
                if not skip_special_tokens:
                    out.append(SPECIALS[t])
            else:
                out.append(chr(t - len(SPECIALS)))
        return "".join(out)


class SpyGenerator(ScriptedGenerator):
    """Records every call's prompts, params (seeds included) and outputs."""

    def __init__(self, tokenizer: Tokenizer, replies: Sequence[str] | Callable[[str], str]) -> None:
        super().__init__(tokenizer, replies)
        self.prompts: list[list[tuple[int, ...]]] = []
        self.params: list[SamplingParams] = []
        self.outputs: list[list[Completion]] = []

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        self.prompts.append([tuple(p) for p in prompts])
        self.params.append(params)
        out = super().generate(prompts, params)
        self.outputs.append(out)
        return out


class ListRetriever:
    """Ranks passages by word overlap with the query (in memory, deterministic)."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = list(passages)
        self.queries: list[str] = []

    def search(self, query: str, top_k: int) -> list[Passage]:
        self.queries.append(query)
        words = set(query.lower().split())
        scored = [(len(words & set(f"{p.title} {p.text}".lower().split())), i) for i, p in enumerate(self.passages)]
        ranked = sorted((s, -i) for s, i in scored if s > 0)[::-1]
        return [self.passages[-i] for _, i in ranked[:top_k]]


PASSAGES = (
    Passage(title="France", text="France is a country in Europe. Its capital is Paris."),
    Passage(title="Germany", text="Germany is a country in Europe. Its capital is Berlin."),
    Passage(title="Eiffel Tower", text="The Eiffel Tower is a tower in Paris."),
)


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer()


@pytest.fixture
def chat(tokenizer: CharTokenizer) -> ChatFormat:
    return ChatFormat(tokenizer)


@pytest.fixture
def retriever() -> ListRetriever:
    return ListRetriever(PASSAGES)


@pytest.fixture
def qa_task() -> Task:
    return Task(id="q1", question="What is the capital of France?", answers=("Paris",), supporting_titles=("France",))


@pytest.fixture
def calc_task() -> Task:
    return Task(id="c1", question="What is 17*23?", answers=("391",))
