"""The search tool and its retrievers: BM25 (local, cached), a remote HTTP server; dense in `tools.dense`.

`Retriever` is the plug point; `SearchTool` wraps one as a stateful tool that
formats numbered passages for the model and remembers which titles it showed
(for retrieval recall). Retriever failures raise `RetrieverError`; the tool
layer turns them into a model-facing error observation. `build_index` is the one
map from a retriever kind (`vocab.RETRIEVERS`) to a local index, and
`index_cache_path` the one on-disk cache key (kind + corpus content hash).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from worker.rl.types import Passage, Task
from worker.rl.vocab import RETRIEVERS

logger = logging.getLogger(__name__)

_INDEX_VERSION = "bm25s-v1-en-stem"


class RetrieverError(RuntimeError):
    """A retriever could not answer (server down, bad response, missing index)."""


@runtime_checkable
class Retriever(Protocol):
    """Anything that returns ranked passages for text queries."""

    def search(self, query: str, top_k: int) -> list[Passage]: ...

    def search_batch(self, queries: Sequence[str], top_k: int) -> list[list[Passage]]: ...


def corpus_from_tasks(tasks: Iterable[Task]) -> list[Passage]:
    """Pool the tasks' context paragraphs into one corpus, deduplicated by (title, text), first seen first."""
    seen: set[tuple[str, str]] = set()
    corpus: list[Passage] = []
    for task in tasks:
        for p in task.context:
            key = (p.title, p.text)
            if key not in seen:
                seen.add(key)
                corpus.append(Passage(title=p.title, text=p.text, id=p.id or f"doc-{len(corpus)}"))
    return corpus


def corpus_hash(passages: Sequence[Passage], *, salt: str = _INDEX_VERSION) -> str:
    """A content hash of a corpus (titles and texts, in order) and `salt` (what builds the index from it)."""
    h = hashlib.sha256(salt.encode())
    for p in passages:
        h.update(b"\x00" + p.title.encode() + b"\x01" + p.text.encode())
    return h.hexdigest()[:24]


def index_cache_path(cache_dir: Path, kind: str, passages: Sequence[Passage], *, salt: str) -> Path:
    """`<cache_dir>/<kind>-<corpus hash>`: where an index of this corpus is cached.

    `salt` names the index builder (BM25's tokenizer version, the dense model id): a change makes a new key.
    """
    return Path(cache_dir) / f"{kind}-{corpus_hash(passages, salt=salt)}"


def default_index_cache_dir() -> Path:
    """`$STUDIO_DATA_DIR/cache/indexes`, else `var/cache/indexes`: the studio's own index cache (`worker.jobs`)."""
    data_dir = os.environ.get("STUDIO_DATA_DIR")
    return (Path(data_dir) if data_dir else Path("var")) / "cache" / "indexes"


def build_index(kind: str, passages: Sequence[Passage], *, cache_dir: Path | None = None) -> Retriever:
    """A local retriever of `kind` ('bm25' or 'dense') over `passages`, reusing the index cached under `cache_dir`."""
    if kind == "bm25":
        return BM25Retriever.from_passages(passages, cache_dir=cache_dir)
    if kind == "dense":
        from worker.rl.tools.dense import DenseRetriever

        return DenseRetriever.from_passages(passages, cache_dir=cache_dir)
    raise ValueError(f"retriever {kind!r} is not one of {', '.join(RETRIEVERS)}")


def _stemmer() -> Any:
    try:
        import Stemmer
    except ImportError:
        logger.info("PyStemmer not installed: BM25 runs without stemming")
        return None
    return Stemmer.Stemmer("english")


class BM25Retriever:
    """Sparse BM25 over a passage list (bm25s), indexing "title text"; cached on disk by corpus hash."""

    def __init__(self, passages: Sequence[Passage], index: Any, *, loaded_from_cache: bool = False) -> None:
        self.passages = list(passages)
        self._index = index
        self._stemmer = _stemmer()
        self.loaded_from_cache = loaded_from_cache
        """True when the index came from `cache_dir` instead of being rebuilt."""

    @classmethod
    def from_passages(cls, passages: Sequence[Passage], *, cache_dir: Path | None = None) -> BM25Retriever:
        """Index `passages`, or reload the index cached under `cache_dir` for the same corpus."""
        import bm25s

        if not passages:
            raise ValueError("passages must not be empty: BM25 needs a corpus to index")
        path = index_cache_path(cache_dir, "bm25", passages, salt=_INDEX_VERSION) if cache_dir is not None else None
        if path is not None and (path / "params.index.json").is_file():
            logger.info("loading BM25 index from %s", path)
            return cls(passages, bm25s.BM25.load(str(path), show_progress=False), loaded_from_cache=True)
        texts = [f"{p.title} {p.text}" for p in passages]
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), show_progress=False)
        index = bm25s.BM25()
        index.index(tokens, show_progress=False)
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            index.save(str(path), show_progress=False)
            logger.info("saved BM25 index (%d passages) to %s", len(passages), path)
        return cls(passages, index)

    def search(self, query: str, top_k: int) -> list[Passage]:
        return self.search_batch([query], top_k)[0]

    def search_batch(self, queries: Sequence[str], top_k: int) -> list[list[Passage]]:
        import bm25s

        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not queries:
            return []
        vocab = self._index.vocab_dict
        tokens = bm25s.tokenize(
            list(queries), stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        known = [[t for t in q if t in vocab] for q in tokens]
        out: list[list[Passage]] = [[] for _ in queries]
        asked = [i for i, q in enumerate(known) if q]
        if not asked:
            return out
        k = min(top_k, len(self.passages))
        docs, scores = self._index.retrieve([known[i] for i in asked], k=k, show_progress=False, n_threads=1)
        for row, i in enumerate(asked):
            out[i] = [
                _with_score(self.passages[int(d)], float(s))
                for d, s in zip(docs[row], scores[row], strict=True)
                if s > 0
            ]
        return out


def _with_score(p: Passage, score: float) -> Passage:
    return Passage(title=p.title, text=p.text, score=score, id=p.id)


def _parse_remote_hit(hit: Any) -> Passage:
    """A Search-R1 hit `{"document": {"contents": "Title\\ntext"}, "score": s}` or `{"title", "text", "score"}`."""
    if not isinstance(hit, dict):
        raise RetrieverError(f"unexpected search hit {hit!r}: expected an object")
    score = float(hit.get("score", 0.0))
    doc = hit.get("document", hit)
    if "contents" in doc:
        title, _, text = str(doc["contents"]).partition("\n")
        return Passage(title=title.strip().strip('"'), text=text.strip(), score=score, id=str(doc.get("id", "")))
    if "text" in doc:
        return Passage(title=str(doc.get("title", "")), text=str(doc["text"]), score=score, id=str(doc.get("id", "")))
    raise RetrieverError(f"search hit has neither 'contents' nor 'text': {sorted(doc)}")


class RemoteRetriever:
    """A retrieval server over HTTP: POST `{"queries": [...], "topk": k}` (Search-R1 / FlashRAG style)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s

    def search(self, query: str, top_k: int) -> list[Passage]:
        return self.search_batch([query], top_k)[0]

    def search_batch(self, queries: Sequence[str], top_k: int) -> list[list[Passage]]:
        payload = {"queries": list(queries), "topk": top_k, "return_scores": True}
        try:
            response = httpx.post(self.url, json=payload, timeout=self.timeout_s)
            response.raise_for_status()
            body = response.json()
        except httpx.HTTPStatusError as exc:
            raise RetrieverError(f"search server {self.url} answered HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise RetrieverError(f"search server {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise RetrieverError(f"search server {self.url} returned non-JSON") from exc
        results = body.get("result") if isinstance(body, dict) else body
        if not isinstance(results, list) or len(results) != len(queries):
            raise RetrieverError(
                f"search server {self.url} returned {type(results).__name__} "
                f"instead of one list of hits per query ({len(queries)})"
            )
        return [[_parse_remote_hit(h) for h in hits][:top_k] for hits in results]


class SearchTool:
    """The model-facing `search` tool over a `Retriever`; remembers the titles it returned."""

    name = "search"

    def __init__(self, retriever: Retriever, *, top_k: int = 3, max_passage_chars: int = 400) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if max_passage_chars < 20:
            raise ValueError(f"max_passage_chars must be >= 20 to show anything useful, got {max_passage_chars}")
        self.retriever = retriever
        self.top_k = top_k
        self.max_passage_chars = max_passage_chars
        self.retrieved_titles: list[str] = []
        """Every title shown to the model since the last `reset()`, in order."""

    def reset(self) -> None:
        """Forget the titles of a previous episode."""
        self.retrieved_titles = []

    def execute(self, query: str) -> str:
        """Search the knowledge base for passages relevant to a query.

        Args:
            query: What to look up, e.g. an entity name or a short question.
        """
        query = query.strip()
        if not query:
            raise ValueError("query must not be empty: pass a few keywords, e.g. an entity name")
        passages = self.retriever.search(query, self.top_k)
        if not passages:
            return f"No results found for {query!r}. Try other keywords."
        self.retrieved_titles.extend(p.title for p in passages)
        return "\n".join(format_passage(i, p, self.max_passage_chars) for i, p in enumerate(passages, start=1))


def format_passage(rank: int, passage: Passage, max_chars: int) -> str:
    """`Doc 1 (Title: X) text`, the text cut to `max_chars` characters (with "...")."""
    text = " ".join(passage.text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 3].rstrip() + "..."
    return f"Doc {rank} (Title: {passage.title}) {text}"


def _title_key(title: str) -> str:
    return re.sub(r"\s+", " ", title).strip().lower()


def retrieval_recall(retrieved_titles: Iterable[str], supporting_titles: Iterable[str]) -> float:
    """Share of the gold supporting titles found among the retrieved ones (0.0 when there is no gold)."""
    gold = {_title_key(t) for t in supporting_titles}
    if not gold:
        return 0.0
    found = {_title_key(t) for t in retrieved_titles} & gold
    return len(found) / len(gold)
