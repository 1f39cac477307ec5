"""Retrieval only (no LLM): recall@k of the gold supporting titles, BM25 vs dense, on the local benchmark samples.

    python -m bench.retrieval                          # hotpotqa, both retrievers, top-3
    python -m bench.retrieval --datasets hotpotqa,2wiki,musique --top-k 5

Each dataset is searched as the evaluation searches it (`evaluation.job.retriever_factory`: one index over
every context paragraph of the dataset's file), with the question as the query, as naive RAG does. Recall@k
is the share of a question's supporting titles among the top-k titles, averaged over questions; "all found"
is the share of questions whose every supporting title is in the top-k. Index build times are measured
with a fresh cache dir (so dense includes embedding the corpus) and again from the cache.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.hostperf import cpu_flags, cpu_model
from worker.rl.evaluation.job import EvalRequest, load_tasks, retriever_factory
from worker.rl.tools.search import retrieval_recall
from worker.rl.types import Task
from worker.rl.vocab import RETRIEVERS

REPO = Path(__file__).resolve().parents[1]


def recall_at_k(retriever: Any, tasks: Sequence[Task], top_k: int) -> tuple[float, float, float]:
    """(mean recall@k, share with every gold title found, seconds for the batch of queries)."""
    started = time.perf_counter()
    hits = retriever.search_batch([t.question for t in tasks], top_k)
    query_s = time.perf_counter() - started
    recalls = [retrieval_recall([p.title for p in h], t.supporting_titles) for t, h in zip(tasks, hits, strict=True)]
    return sum(recalls) / len(recalls), sum(r == 1.0 for r in recalls) / len(recalls), query_s


def measure(datasets: Sequence[str], retrievers: Sequence[str], *, top_k: int, data_dir: Path) -> dict[str, Any]:
    _subsets, full = load_tasks(EvalRequest(datasets=tuple(datasets), limit=None), data_dir)
    rows = []
    for name, tasks in full.items():
        gold = [t for t in tasks if t.supporting_titles]
        for kind in retrievers:
            with tempfile.TemporaryDirectory() as cache:
                factory = retriever_factory(full, kind, Path(cache))
                started = time.perf_counter()
                retriever = factory(name, tasks)
                build_s = time.perf_counter() - started
                started = time.perf_counter()
                factory(name, tasks)  # the same corpus again: from the cache
                cached_s = time.perf_counter() - started
            recall, all_found, query_s = recall_at_k(retriever, gold, top_k)
            rows.append(
                {
                    "dataset": name,
                    "retriever": kind,
                    "questions": len(gold),
                    "passages": len(retriever.passages),
                    f"recall@{top_k}": recall,
                    "all_found": all_found,
                    "build_s": build_s,
                    "cached_build_s": cached_s,
                    "query_s": query_s,
                }
            )
    return {"top_k": top_k, "rows": rows, "cpu_model": cpu_model(), "cpu_flags": cpu_flags()}


def render(out: dict[str, Any]) -> str:
    k = out["top_k"]
    lines = [
        f"| Dataset | Retriever | Questions | Passages | Recall@{k} | All gold in top-{k} | Index build (s) "
        "| From cache (s) | Queries (s) |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['dataset']} | {r['retriever']} | {r['questions']} | {r['passages']} | {r[f'recall@{k}']:.3f} "
            f"| {r['all_found']:.3f} | {r['build_s']:.1f} | {r['cached_build_s']:.2f} | {r['query_s']:.2f} |"
            for r in out["rows"]
        ],
        "",
        f"CPU {out['cpu_model']} (flags: {', '.join(out['cpu_flags']) or 'none'}).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="hotpotqa", help="Comma list of hotpotqa, 2wiki, musique.")
    parser.add_argument("--retriever", default=",".join(RETRIEVERS), help=f"Comma list of {', '.join(RETRIEVERS)}.")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    retrievers = [r.strip() for r in args.retriever.split(",") if r.strip()]
    if not retrievers or any(r not in RETRIEVERS for r in retrievers):
        parser.error(f"--retriever {args.retriever!r}: give a comma list of {', '.join(RETRIEVERS)}")
    if args.top_k < 1:
        parser.error("--top-k must be >= 1")
    out = measure(args.datasets.split(","), retrievers, top_k=args.top_k, data_dir=args.data_dir)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(render(out))


if __name__ == "__main__":
    main()
