"""The job lifecycle through a REAL stack: create → run → stream → cancel → resume; a SIGKILLed worker.

A tiny random Llama (char tokenizer) saved to disk stands in for the model, so a
training step takes about a second; everything else is the product: HTTP API,
SQLite, the embedded redis-server, a Celery worker and the RL core's trainer.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Stack

PER_STEP = 2
"""Trajectories per step: prompts_per_step 1 × group_size 2."""
STEPS = 40
"""A tiny-model step takes a fraction of a second on an idle machine: the run must be long enough that
the cancel (or the SIGKILL) surely lands while it is still going."""


def tiny_run(model_dir: Path, total_steps: int) -> dict[str, Any]:
    config = {
        "model": {"name_or_path": str(model_dir), "device": "cpu"},
        "engine": {"backend": "hf"},
        "task": {"source": "demo", "eval_size": 2, "force_first_search": True, "top_k": 1, "max_passage_chars": 80},
        "rollout": {
            "prompts_per_step": 1,
            "group_size": PER_STEP,
            "max_turns": 2,
            "max_new_tokens_per_turn": 6,
            "max_total_tokens": 4096,
        },
        "algorithm": {"minibatch_size": 2},
        "optim": {"total_steps": total_steps, "lr": 1e-3},
        "eval": {"num_tasks": 0, "at_start": False},
        "logging": {"save_every_steps": 1, "keep_last_checkpoints": 2},
    }
    return {"kind": "train", "name": "e2e tiny", "preset": None, "config": config}


def api(stack: Stack, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"X-Studio-Client": "tests"}  # the API's CSRF guard wants it on body-less POSTs
    response = httpx.request(method, f"{stack.api_url}/api/v1{path}", timeout=30, headers=headers, **kwargs)
    assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def wait_for(stack: Stack, what: str, predicate: Any, timeout_s: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\nworker log:\n{stack.log_tail('worker')}")


def wait_status(stack: Stack, run_id: int, statuses: tuple[str, ...], timeout_s: float = 180.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = api(stack, "GET", f"/runs/{run_id}")
        return run if run["status"] in statuses else None

    return wait_for(stack, f"run {run_id} to become {statuses}", done, timeout_s)  # type: ignore[no-any-return]


def steps_of(stack: Stack, run_id: int) -> Counter[int]:
    page = api(stack, "GET", "/trajectories", params={"run_id": run_id, "limit": 500})
    return Counter(item["step"] for item in page["items"])


def test_create_stream_cancel_resume(stack: Stack, tiny_model_dir: Path) -> None:
    stack.start_worker()
    run = api(stack, "POST", "/runs", json=tiny_run(tiny_model_dir, total_steps=STEPS))
    run_id = run["id"]
    # stream: poll metrics until the first step lands, then cancel while the run is surely still going
    first = wait_for(stack, "the first metrics", lambda: api(stack, "GET", f"/runs/{run_id}/metrics")["points"])
    assert "reward/mean" in first[0]["values"]
    assert "loss/policy" in first[0]["values"]
    api(stack, "POST", f"/runs/{run_id}/cancel")
    cancelled = wait_status(stack, run_id, ("cancelled", "succeeded", "failed"))
    assert cancelled["status"] == "cancelled", cancelled["error"]
    assert cancelled["resumable"]
    last_step = api(stack, "GET", f"/runs/{run_id}/metrics")["last_step"]
    assert last_step < STEPS
    checkpoints = api(stack, "GET", f"/runs/{run_id}/checkpoints")
    assert max(c["step"] for c in checkpoints) == last_step, "cancel must checkpoint the step it stopped at"
    # trajectories carry one decoded piece per token for the replay
    traj_id = api(stack, "GET", "/trajectories", params={"run_id": run_id, "limit": 1})["items"][0]["id"]
    data = api(stack, "GET", f"/trajectories/{traj_id}")["data"]
    assert len(data["token_texts"]) == len(data["token_ids"])
    assert "Question:" in "".join(data["token_texts"])
    api(stack, "POST", f"/runs/{run_id}/resume")
    finished = wait_status(stack, run_id, ("succeeded", "failed", "cancelled"))
    assert finished["status"] == "succeeded", finished["error"]
    assert api(stack, "GET", f"/runs/{run_id}/metrics")["last_step"] == STEPS
    assert steps_of(stack, run_id) == Counter(dict.fromkeys(range(1, STEPS + 1), PER_STEP))
    # the live curve's incremental poll: only the points after `since`
    newer = api(stack, "GET", f"/runs/{run_id}/metrics?since={last_step}")["points"]
    assert [p["step"] for p in newer] == list(range(last_step + 1, STEPS + 1))


def test_sigkilled_worker_run_resumes_by_itself(stack: Stack, tiny_model_dir: Path) -> None:
    stack.start_worker()
    run_id = api(stack, "POST", "/runs", json=tiny_run(tiny_model_dir, total_steps=STEPS))["id"]
    wait_for(stack, "two steps", lambda: len(api(stack, "GET", f"/runs/{run_id}/metrics")["points"]) >= 2)
    stack.kill_worker()
    before = api(stack, "GET", "/trajectories", params={"run_id": run_id, "limit": 500})["items"]
    assert before, "trajectories stored before the crash must survive it"
    # nothing sweeps while no worker runs: GET /health only counts the silent run
    wait_for(stack, "the run to look stale", lambda: api(stack, "GET", "/health")["stale_runs"] == 1, timeout_s=60)
    assert api(stack, "GET", f"/runs/{run_id}")["status"] == "running"
    # a fresh worker's sweeper queues it again and sends it (the dead worker's message is stuck unacked)
    stack.start_worker()
    finished = wait_status(stack, run_id, ("succeeded", "failed", "cancelled"))
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["error"] is None
    assert finished["auto_resumes"] == 1
    page = api(stack, "GET", "/trajectories", params={"run_id": run_id, "limit": 500})
    after = {item["id"] for item in page["items"]}
    assert {item["id"] for item in before} <= after, "the resume must keep the trajectories stored before the crash"
    assert steps_of(stack, run_id) == Counter(dict.fromkeys(range(1, STEPS + 1), PER_STEP))
    checkpoints = api(stack, "GET", f"/runs/{run_id}/checkpoints")
    assert max(c["step"] for c in checkpoints) == STEPS
