"""Retrievers and the search tool: BM25 ranking and cache reuse, remote parsing, formatting, recall."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from worker.rl.tools.search import (
    BM25Retriever,
    RemoteRetriever,
    RetrieverError,
    SearchTool,
    corpus_from_tasks,
    retrieval_recall,
)
from worker.rl.types import Passage, Task

CORPUS = [
    Passage("Paris", "Paris is the capital and largest city of France.", id="p0"),
    Passage("Berlin", "Berlin is the capital of Germany and its largest city.", id="p1"),
    Passage("Rome", "Rome is the capital city of Italy, founded by Romulus.", id="p2"),
    Passage("Danube", "The Danube is a long river flowing through central Europe.", id="p3"),
]


def test_bm25_ranks_and_scores() -> None:
    retriever = BM25Retriever.from_passages(CORPUS)
    hits = retriever.search("capital of Germany", top_k=2)
    assert hits[0].title == "Berlin"
    assert hits[0].score > hits[1].score > 0
    batch = retriever.search_batch(["river Europe", "Italy founded", "the of a"], top_k=3)
    assert batch[0][0].title == "Danube"
    assert batch[1][0].title == "Rome"
    assert batch[2] == []  # stopwords only: nothing matches
    assert retriever.search("zzzz unknownword", top_k=3) == []


def test_bm25_cache_reuse(tmp_path: Path) -> None:
    first = BM25Retriever.from_passages(CORPUS, cache_dir=tmp_path)
    second = BM25Retriever.from_passages(CORPUS, cache_dir=tmp_path)
    assert (first.loaded_from_cache, second.loaded_from_cache) == (False, True)
    assert second.search("capital of Germany", 3) == first.search("capital of Germany", 3)
    changed = BM25Retriever.from_passages([*CORPUS, Passage("Oslo", "Oslo is in Norway.")], cache_dir=tmp_path)
    assert not changed.loaded_from_cache
    assert len(list(tmp_path.iterdir())) == 2


def test_corpus_from_tasks_dedups() -> None:
    tasks = [Task("a", "q", ("x",), context=(CORPUS[0], CORPUS[1])), Task("b", "q", ("y",), context=(CORPUS[1],))]
    corpus = corpus_from_tasks(tasks)
    assert [p.title for p in corpus] == ["Paris", "Berlin"]


def test_search_tool_formats_truncates_and_records() -> None:
    tool = SearchTool(BM25Retriever.from_passages(CORPUS), top_k=2, max_passage_chars=30)
    out = tool.execute("capital of Germany")
    lines = out.splitlines()
    assert lines[0] == "Doc 1 (Title: Berlin) Berlin is the capital of Ge..."
    assert lines[1].startswith("Doc 2 (Title: ")
    assert tool.retrieved_titles[0] == "Berlin"
    assert len(tool.retrieved_titles) == 2
    assert "No results" in tool.execute("zzzz")
    with pytest.raises(ValueError, match="query must not be empty"):
        tool.execute("  ")
    tool.reset()
    assert tool.retrieved_titles == []
    assert tool.name == "search"
    assert "Args:" in (SearchTool.execute.__doc__ or "")


@pytest.mark.parametrize(
    ("retrieved", "gold", "expected"),
    [
        (["A", "B"], ["A", "C"], 0.5),
        (["a ", "c"], ["A", "C"], 1.0),
        ([], ["A"], 0.0),
        (["A"], [], 0.0),
        (["A", "A"], ["A", "B"], 0.5),
    ],
)
def test_retrieval_recall(retrieved: list[str], gold: list[str], expected: float) -> None:
    assert retrieval_recall(retrieved, gold) == expected


class _Handler(BaseHTTPRequestHandler):
    responses: ClassVar[list[tuple[int, object]]] = []
    requests: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.requests.append(body)
        status, payload = _Handler.responses.pop(0)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/retrieve"
    httpd.shutdown()
    httpd.server_close()


def test_remote_retriever_formats(server: str) -> None:
    search_r1 = {
        "result": [[{"document": {"id": "9", "contents": '"Ed Wood"\nEd Wood was a filmmaker.'}, "score": 3.5}]]
    }
    simple = [[{"title": "Paris", "text": "Capital.", "score": 1.0}], []]
    _Handler.responses = [(200, search_r1), (200, simple), (500, {"error": "boom"}), (200, {"result": "bad"})]
    retriever = RemoteRetriever(server, timeout_s=5)
    (hit,) = retriever.search("who is ed wood", top_k=3)
    assert (hit.title, hit.text, hit.score, hit.id) == ("Ed Wood", "Ed Wood was a filmmaker.", 3.5, "9")
    assert _Handler.requests[-1]["queries"] == ["who is ed wood"]
    assert _Handler.requests[-1]["topk"] == 3
    assert retriever.search_batch(["a", "b"], top_k=1) == [[Passage("Paris", "Capital.", 1.0)], []]
    with pytest.raises(RetrieverError, match="HTTP 500"):
        retriever.search("x", 1)
    with pytest.raises(RetrieverError, match="one list of hits per query"):
        retriever.search("x", 1)


def test_remote_retriever_unreachable() -> None:
    with pytest.raises(RetrieverError, match="unreachable"):
        RemoteRetriever("http://127.0.0.1:9/retrieve", timeout_s=1).search("x", 1)
    with pytest.raises(ValueError, match="url"):
        RemoteRetriever("localhost:8000")
