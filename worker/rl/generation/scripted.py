"""`ScriptedGenerator`: a `Generator` that replays canned replies (tests, UI demos).

It behaves like an engine at the boundary: stop strings cut the reply after the
first match (inclusive), `max_new_tokens` truncates, EOS ends a natural reply,
and every sampled token gets the constant logprob `SCRIPTED_LOGPROB`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from worker.rl.generation.base import Completion, EngineFinish, SamplingParams, Tokenizer

logger = logging.getLogger(__name__)

SCRIPTED_LOGPROB = 0.0
"""Log-probability reported for every replayed token: a script picks its reply with probability 1."""

Replies = Sequence[str] | Callable[[str], str]


class ScriptedGenerator:
    """Replays replies: a list (the k-th reply answers a conversation's k-th turn) or `fn(prompt_text)`.

    With a list, each conversation is followed by prefix: a prompt that extends an
    earlier prompt plus its completion gets the next reply, so every member of a
    group walks the script from the start. Running out of replies raises ValueError.
    """

    name = "scripted"

    def __init__(self, tokenizer: Tokenizer, replies: Replies, *, logprob: float = SCRIPTED_LOGPROB) -> None:
        if not callable(replies) and not replies:
            raise ValueError("replies must be a non-empty list of strings or a callable (prompt_text) -> str")
        self.tokenizer = tokenizer
        self.replies = replies
        self.logprob = logprob
        self.calls: list[int] = []
        """Batch size of every `generate` call, in order (handy for tests)."""
        self._seen: dict[tuple[int, ...], int] = {}

    def reset(self) -> None:
        """Forget the conversations seen so far."""
        self._seen.clear()
        self.calls.clear()

    def _reply_index(self, prompt: tuple[int, ...]) -> int:
        best = -1
        for known, index in self._seen.items():
            if index > best and len(known) <= len(prompt) and prompt[: len(known)] == known:
                best = index
        return best + 1

    def _reply_for(self, prompt: tuple[int, ...]) -> tuple[str, int]:
        if callable(self.replies):
            return self.replies(self.tokenizer.decode(list(prompt), skip_special_tokens=False)), 0
        index = self._reply_index(prompt)
        if index >= len(self.replies):
            raise ValueError(f"ScriptedGenerator ran out of replies ({len(self.replies)} given) at turn {index + 1}")
        return self.replies[index], index

    def _complete(self, text: str, params: SamplingParams) -> Completion:
        finish: EngineFinish = "stop"
        cuts = [text.find(s) + len(s) for s in params.stop if s and s in text]
        if cuts:
            ids = list(self.tokenizer.encode(text[: min(cuts)], add_special_tokens=False))
        else:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            if self.tokenizer.eos_token_id is not None:
                ids.append(self.tokenizer.eos_token_id)
        if len(ids) > params.max_new_tokens:
            ids, finish = ids[: params.max_new_tokens], "length"
        return Completion(token_ids=tuple(ids), logprobs=(self.logprob,) * len(ids), finish_reason=finish)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """One completion per prompt, in order."""
        self.calls.append(len(prompts))
        out: list[Completion] = []
        for prompt in prompts:
            key = tuple(prompt)
            text, index = self._reply_for(key)
            completion = self._complete(text, params)
            if not callable(self.replies):
                self._seen[key + completion.token_ids] = index
            out.append(completion)
        return out
