"""Token pieces for the studio's replay: a run's tokenizer loaded once, one decoded string per token id.

Stored trajectories keep only token ids (token-in/token-out); the UI colours text by
loss mask, so the worker attaches `token_texts` before saving. Pieces are cached per id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def load_tokenizer(name_or_path: str | Path) -> Any:
    """The tokenizer of a model alias, local dir or hub id (no model weights are loaded)."""
    from transformers import AutoTokenizer

    from worker.rl.generation.loading import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))


class TokenPieces:
    """`pieces(ids) -> list[str]`: each id decoded on its own (special tokens kept), memoised."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_ids: Sequence[int]) -> list[str]:
        missing = sorted({int(t) for t in token_ids} - self._cache.keys())
        if missing:
            texts = self._tokenizer.batch_decode([[t] for t in missing], skip_special_tokens=False)
            self._cache.update(zip(missing, texts, strict=True))
        return [self._cache[int(t)] for t in token_ids]
