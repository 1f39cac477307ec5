"""Benchmark: ingest trajectories through `SqlRunStore` bulk inserts on SQLite, then time the API.

Prints trajectories/s for ingest and p50/p95 latency of the trajectory list (with
filters) and detail endpoints through TestClient. Targets: >= 2,000 traj/s, p95 < 200 ms.
Usage: python bench/api_ingest.py [--n 100000] [--batch 1000] [--tokens 256]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere


def make_trajectory(rng: random.Random, group: int, tokens: int) -> dict[str, Any]:
    """A 3-turn trajectory dict shaped like `Trajectory.to_dict()` (3 assistant turns, 2 tool results)."""
    turns, start = [], 0
    for k in range(5):
        role = "assistant" if k % 2 == 0 else "tool"
        length = tokens // 5
        calls = (
            [{"name": "search", "arguments": {"query": f"q{rng.randint(0, 999)}"}, "id": ""}]
            if k < 4 and role == "assistant"
            else []
        )
        turns.append(
            {
                "role": role,
                "text": "x" * 80,
                "token_start": start,
                "token_end": start + length,
                "tool_calls": calls,
                "name": "search" if role == "tool" else None,
                "step_reward": 0.0,
                "parse_error": "bad json" if rng.random() < 0.05 else None,
                "tool_error": role == "tool" and rng.random() < 0.05,
            }
        )
        start += length
    mask = [int(rng.random() < 0.5) for _ in range(tokens)]
    ids = [rng.randint(0, 49151) for _ in range(tokens)]
    return {
        "task_id": f"task-{group}",
        "group_id": f"{group}",
        "token_ids": ids,
        "loss_mask": mask,
        "logprobs": [round(-rng.random(), 4) if m else None for m in mask],
        "prompt_length": 40,
        "turns": turns,
        "reward": rng.choice([0.0, 0.2, 0.5, 1.0]),
        "reward_breakdown": {"exact_match": 1.0},
        "step_rewards": [0.0, 0.0, 1.0],
        "terminated": True,
        "truncated": rng.random() < 0.1,
        "finish_reason": "answer",
        "final_answer": "x",
        "metrics": {},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ingest(run_id: int, n: int, batch: int, tokens: int) -> float:
    from worker.store import SqlRunStore

    store, rng = SqlRunStore(), random.Random(0)
    pool = [make_trajectory(rng, g, tokens) for g in range(200)]  # generation is not what we measure
    start = time.perf_counter()
    for offset in range(0, n, batch):
        size = min(batch, n - offset)
        rows = [{**pool[(offset + i) % len(pool)], "group_id": f"{(offset + i) // 8}"} for i in range(size)]
        store.save_trajectories(run_id, offset // batch, rows)
    return time.perf_counter() - start


def time_requests(client: Any, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        start = time.perf_counter()
        response = client.get(url)
        out.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    os.environ.update(
        {
            "STUDIO_DATA_DIR": str(data_dir),
            "STUDIO_DATABASE_URL": "",
            "STUDIO_API_TOKEN": "",
            "STUDIO_API_HOST": "127.0.0.1",
        }
    )
    from alembic import command
    from fastapi.testclient import TestClient

    from backend.core.config import get_settings
    from backend.core.db import alembic_config, session_scope
    from backend.crud import runs as runs_crud
    from backend.main import create_app

    command.upgrade(alembic_config(get_settings().resolved_database_url), "head")
    with session_scope() as s:
        run_id = runs_crud.create_job_run(s, kind="rollout", name="bench", config={}).id
    seconds = ingest(run_id, args.n, args.batch, args.tokens)
    size_mb = (data_dir / "studio.db").stat().st_size / 1e6
    print(
        f"ingest: {args.n} trajectories ({args.tokens} tokens, 3 assistant turns) in {seconds:.1f} s "
        f"= {args.n / seconds:,.0f} traj/s; db {size_mb:,.0f} MB"
    )
    rng = random.Random(1)
    with TestClient(create_app()) as client:
        filters = ["", "&min_reward=0.5", "&has_tool_error=true", "&labeled=false", "&step=7"]
        base = f"/api/v1/trajectories?run_id={run_id}&limit=50"
        lists = [f"{base}&offset={rng.randint(0, 5000)}{rng.choice(filters)}" for _ in range(args.requests)]
        details = [f"/api/v1/trajectories/{rng.randint(1, args.n)}" for _ in range(args.requests)]
        for name, urls in (("list", lists), ("detail", details)):
            ms = time_requests(client, urls)
            print(
                f"{name}: p50 {statistics.median(ms):.1f} ms, p95 {percentile(ms, 0.95):.1f} ms over {len(ms)} requests"
            )


if __name__ == "__main__":
    main()
