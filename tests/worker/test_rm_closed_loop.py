"""The closed loop on CPU with the bundled SmolLM2-135M: labels through the API → rm_train → GRPO on that reward.

A scripted labeler applies a hidden preference — the first search query names the question's entity
(every capitalised word after the first) — to pairs from the pair queue, through the same HTTP routes
the Label tab uses. A reward model trained on those labels must reach >= 0.8 held-out pairwise
accuracy, and a GRPO run whose ONLY reward is that model (`task.env_reward_weight = 0`) must raise the
hidden-preference rate on held-out tasks by >= 0.2 absolute.

Time budget: <= 60 minutes on a 2-core CPU host (rollouts ~10 min, reward model ~10 min, GRPO ~30 min,
two held-out evaluations ~4 min). Run with `pytest -m slow tests/worker/test_rm_closed_loop.py`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.api.deps import get_enqueue
from backend.main import create_app
from worker import jobs
from worker.rl.training.checkpoint import export_hf_model
from worker.rl.types import Trajectory
from worker.store import SqlRunStore

API = "/api/v1"
pytestmark = pytest.mark.slow

ROLLOUT = {
    "task": {"format_reward_weight": 0.0},
    "rollout": {"prompts_per_step": 8, "group_size": 4, "temperature": 1.0},
    "optim": {"total_steps": 12},
    "eval": {"num_tasks": 0, "at_start": False},
}
GRPO_STEPS = 30
LABEL_PAIRS = 300


def entity_words(question: str) -> list[str]:
    words = re.findall(r"[A-Za-z][\w'-]*", question)
    return [w.lower() for w in words[1:] if w[0].isupper()]


def first_query(turns: list[dict[str, Any]]) -> str | None:
    for turn in turns:
        for call in turn.get("tool_calls") or () if turn.get("role") == "assistant" else ():
            return str((call.get("arguments") or {}).get("query", ""))
    return None


def prefers(data: dict[str, Any]) -> bool:
    """The hidden preference, on a stored trajectory: its first query holds every entity word of the question."""
    turns = data.get("turns") or []
    question = next((str(t.get("text") or "") for t in turns if t.get("role") == "user"), "")
    question = question.strip().splitlines()[-1] if question.strip() else ""
    query = first_query(turns)
    words = entity_words(question)
    return bool(query and words and all(w in query.lower() for w in words))


def preference_rate(trajectories: list[Trajectory]) -> float:
    return sum(prefers(t.to_dict()) for t in trajectories) / max(1, len(trajectories))


def held_out_rate(config: Any, model_path: str) -> float:
    from worker.rl.training.build import build_components
    from worker.rl.training.trainer import evaluate_policy

    config = dataclasses.replace(config, model=dataclasses.replace(config.model, name_or_path=model_path))
    comps = build_components(config)
    _, trajectories = evaluate_policy(comps, comps.eval_tasks[:72], config, seed=1)
    return preference_rate(trajectories)


def label_pairs(client: TestClient, run_id: int, budget: int) -> int:
    """The scripted labeler: A/B by the hidden preference, tie when both or neither satisfy it."""
    posted = 0
    while posted < budget:
        queue = client.get(f"{API}/runs/{run_id}/pair-queue", params={"limit": 50}).json()
        if not queue:
            break
        for pair in queue[: budget - posted]:
            a = client.get(f"{API}/trajectories/{pair['a']['id']}").json()["data"]
            b = client.get(f"{API}/trajectories/{pair['b']['id']}").json()["data"]
            choice = "tie" if prefers(a) == prefers(b) else ("a" if prefers(a) else "b")
            body = {"kind": "pairwise", "other_trajectory_id": pair["b"]["id"], "choice": choice, "labeler": "script"}
            assert client.post(f"{API}/trajectories/{pair['a']['id']}/labels", json=body).status_code == 201
            posted += 1
    return posted


def test_labels_to_reward_model_to_grpo_raise_the_hidden_preference(db_url: str, tmp_path: Path) -> None:
    app = create_app()
    app.dependency_overrides[get_enqueue] = lambda: lambda task, run_id: f"task-{run_id}"
    store, runs_dir = SqlRunStore(), tmp_path / "runs"
    with TestClient(app) as client:
        # 1. Rollouts of the base policy (what a team would label)
        rollout = client.post(f"{API}/runs", json={"kind": "rollout", "preset": "quickstart", "config": ROLLOUT})
        rollout_id = rollout.json()["id"]
        jobs.rollout_job(rollout_id, store, hostname="test", runs_dir=runs_dir)
        # 2. The scripted labeler through the API
        assert label_pairs(client, rollout_id, LABEL_PAIRS) >= 100
        stats = client.get(f"{API}/runs/{rollout_id}/labels/stats").json()
        assert stats["labels_by_labeler"]["script"] >= 100
        # 3. rm_train on the bundled model
        created = client.post(f"{API}/reward-models", json={"label_run_ids": [rollout_id], "config": {"epochs": 3}})
        assert created.status_code == 201, created.text
        rm_id = created.json()["id"]
        jobs.rm_train_job(rm_id, store, hostname="test", runs_dir=runs_dir)
        rm = client.get(f"{API}/reward-models/{rm_id}").json()
        assert rm["heldout_accuracy"] >= 0.8, rm
        # 4. GRPO whose only reward is the reward model
        grpo = {
            **ROLLOUT,
            "task": {
                "format_reward_weight": 0.0,
                "env_reward_weight": 0.0,
                "reward_models": [{"id": rm_id, "weight": 1.0, "normalize": True}],
            },
            "optim": {"total_steps": GRPO_STEPS},
            "logging": {"save_every_steps": 0},
        }
        train = client.post(f"{API}/runs", json={"kind": "train", "preset": "quickstart", "config": grpo})
        assert train.status_code == 201, train.text
        train_id = train.json()["id"]
        jobs.train_job(train_id, store, hostname="test", runs_dir=runs_dir)
        run = client.get(f"{API}/runs/{train_id}").json()
        assert run["status"] == "succeeded", run["error"]
    # 5. The hidden-preference rate on held-out tasks, before and after
    config = jobs.resolve_config(store.load_run(train_id))
    checkpoint = sorted((runs_dir / f"run-{train_id}" / "checkpoints").iterdir())[-1]
    exported = export_hf_model(checkpoint, tmp_path / "policy")
    before, after = held_out_rate(config, "smollm2-135m"), held_out_rate(config, str(exported))
    print(f"hidden-preference rate on held-out tasks: {before:.3f} -> {after:.3f}")
    assert after - before >= 0.2
