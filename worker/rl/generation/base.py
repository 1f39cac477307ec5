"""The engine contract: token ids in, token ids and sampling logprobs out.

Every backend (HF transformers, vLLM, the scripted test double) implements
`Generator`. The rollout loop only ever sees ids, so the ids the policy is
trained on are exactly the ids the engine sampled (token-in/token-out).
No torch import here: rollout code and its tests stay light.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

EngineFinish = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample one turn."""

    max_new_tokens: int = 128
    """Upper bound on tokens generated for this turn."""
    temperature: float = 1.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k filtering."""
    stop: tuple[str, ...] = ()
    """Strings that end the turn; the stop string's tokens are kept in the output."""
    seed: int | None = None
    """Base seed; engines derive a per-request seed from it for reproducibility."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class EngineStats:
    """What an engine computed since construction or `reset()`: read by the benches (`bench/`).

    The HF engine fills every field. vLLM reports per request how many prompt tokens its prefix cache
    served (`reused_tokens`; `prefill_tokens` is the rest); it does not expose prefill/decode timing or
    padding, so those stay 0 there."""

    calls: int = 0
    rows: int = 0
    prompt_tokens: int = 0
    """Prompt tokens of every row: what a full re-prefill of each prompt runs."""
    prefill_tokens: int = 0
    """Prompt tokens actually run through the model (reused and shared prefixes are not)."""
    prefill_positions: int = 0
    """Positions the prefill forwards computed, padding included."""
    reused_tokens: int = 0
    """Prompt tokens served from cached rows (the previous call's, or a prefix shared in the call)."""
    prefill_s: float = 0.0
    decode_s: float = 0.0
    """Decode forwards and sampling."""
    decode_tokens: int = 0
    """Tokens fed through decode forwards (one per active row per step)."""
    decode_kv_tokens: int = 0
    """Sum over decode forwards of rows x attended columns (the KV traffic)."""
    decode_steps: int = 0
    sampled_tokens: int = 0

    def reset(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, type(getattr(self, name))())


@dataclass(frozen=True, slots=True)
class Completion:
    """What the engine sampled for one prompt.

    `logprobs[i]` is the log-probability of `token_ids[i]` under the sampling
    distribution actually used (after temperature), one per sampled token.
    `finish_reason` is "stop" when EOS or a stop string ended the turn,
    "length" when `max_new_tokens` ran out.
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: EngineFinish

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError("Completion needs one logprob per sampled token")


@runtime_checkable
class Tokenizer(Protocol):
    """The slice of a tokenizer the rollout needs (HF tokenizers satisfy it)."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@runtime_checkable
class Generator(Protocol):
    """A rollout engine. Batched: one call serves every active trajectory.

    Calls are stateless in meaning: the output depends only on the prompts, params and weights. An engine
    may keep caches between calls to go faster (the HF engine keeps the last call's rows, matched to the next
    call's prompts by exact token prefix); results then differ from a cold call by float rounding at most.
    """

    name: str

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """Sample one completion per prompt (same order)."""
        ...


@runtime_checkable
class CacheHolder(Protocol):
    """Engines that keep KV caches between calls; `release()` frees them (call it when a rollout ends)."""

    def release(self) -> None:
        """Free every cache now; the next call starts cold."""
        ...


@runtime_checkable
class WeightSyncable(Protocol):
    """Engines that serve a policy being trained accept new weights."""

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Replace the served weights after an optimizer step."""
        ...
