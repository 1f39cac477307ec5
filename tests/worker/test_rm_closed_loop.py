"""The closed loop on CPU with the bundled SmolLM2-135M: labels through the API → rm_train → GRPO on that reward.

A scripted labeler applies a hidden preference — the first search query names the question's entity
(every capitalised word of the question after its first word) — to pairs from the pair queue, through
the same HTTP routes the Label tab uses. A reward model trained on those labels must reach >= 0.8
held-out pairwise accuracy, and a GRPO run whose ONLY reward is that model (`task.env_reward_weight = 0`)
must raise the hidden-preference rate of the policy's sampled episodes on the 72 held-out tasks (4 each,
at the labeled rollouts' temperature) by >= 0.2 absolute. The greedy rate is printed too; the base
model's is already ~0.82, so it cannot rise by 0.2.

Time budget: <= 60 minutes on a 2-core CPU host. Measured on an idle 2-core AVX2 host (float32, 2026-12-03):
26 min 55 s in all — rollouts ~3 min, rm_train 2 min (held-out accuracy 0.88 on 25 pairs), GRPO 18-50 s a step
(30 steps 17 min), the two held-out evaluations 4.5 min; sampled rate 0.399 -> 0.851 (docs/reward-models.md).
Run with `pytest -m slow tests/worker/test_rm_closed_loop.py`.
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
from tests.backend.conftest import LOOPBACK_URL
from worker import jobs
from worker.rl.training.checkpoint import export_hf_model
from worker.rl.types import Trajectory
from worker.store import SqlRunStore

API = "/api/v1"

ROLLOUT = {
    "task": {"format_reward_weight": 0.0},
    "rollout": {"prompts_per_step": 8, "group_size": 4, "temperature": 1.0},
    "eval": {"num_tasks": 0, "at_start": False},
}
ROLLOUT_STEPS = 12
GRPO_STEPS = 30
LABEL_PAIRS = 300


def entity_words(question: str) -> list[str]:
    """The capitalised words of a question after its first word (a `Question:` label is not a word of it)."""
    question = re.sub(r"^\s*question\s*:\s*", "", question, flags=re.IGNORECASE)
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


def held_out_rates(config: Any, model_path: str, *, samples: int = 4) -> dict[str, float]:
    """The hidden-preference rate on the 72 held-out tasks: greedy, and sampled as the labeled rollouts were.

    `sampled` is over `samples` episodes per task at the run's rollout temperature: the behaviour GRPO
    optimises and the labelers judged. The base model's greedy rate is already ~0.8 (no room for +0.2).
    """
    from worker.rl.training.build import build_components
    from worker.rl.training.trainer import evaluate_policy

    config = dataclasses.replace(config, model=dataclasses.replace(config.model, name_or_path=model_path))
    comps = build_components(config)
    tasks = comps.eval_tasks[:72]
    _, greedy = evaluate_policy(comps, tasks, config, seed=1)
    sampling = dataclasses.replace(config, eval=dataclasses.replace(config.eval, greedy=False))
    _, sampled = evaluate_policy(comps, [t for t in tasks for _ in range(samples)], sampling, seed=2)
    return {"greedy": preference_rate(greedy), "sampled": preference_rate(sampled)}


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


def closed_loop(
    tmp_path: Path,
    model: str,
    *,
    rollout_steps: int,
    label_pairs_budget: int,
    grpo_steps: int,
) -> dict[str, Any]:
    """Rollouts → scripted labels → rm_train → GRPO on the reward model alone; the figures the test checks."""
    app = create_app()
    app.dependency_overrides[get_enqueue] = lambda: lambda task, run_id, **_: f"task-{run_id}"
    store, runs_dir = SqlRunStore(), tmp_path / "runs"
    base = {**ROLLOUT, "model": {"name_or_path": model}, "optim": {"total_steps": rollout_steps}}
    # a loopback origin and the header the studio's own clients send (the API's CSRF guard)
    with TestClient(app, base_url=LOOPBACK_URL, headers={"X-Studio-Client": "tests"}) as client:
        # 1. Rollouts of the base policy (what a team would label)
        rollout = client.post(f"{API}/runs", json={"kind": "rollout", "preset": "quickstart", "config": base})
        assert rollout.status_code == 201, rollout.text
        rollout_id = rollout.json()["id"]
        jobs.rollout_job(rollout_id, store, hostname="test", runs_dir=runs_dir)
        # 2. The scripted labeler through the API
        posted = label_pairs(client, rollout_id, label_pairs_budget)
        stats = client.get(f"{API}/runs/{rollout_id}/labels/stats").json()
        # 3. rm_train on the same base model
        body = {"label_run_ids": [rollout_id], "base_model": model, "config": {"epochs": 3}}
        created = client.post(f"{API}/reward-models", json=body)
        assert created.status_code == 201, created.text
        rm_id = created.json()["id"]
        jobs.rm_train_job(rm_id, store, hostname="test", runs_dir=runs_dir)
        rm = client.get(f"{API}/reward-models/{rm_id}").json()
        assert rm["status"] == "succeeded", rm["error"]
        # 4. GRPO whose only reward is the reward model
        grpo = {
            **base,
            "task": {
                "format_reward_weight": 0.0,
                "env_reward_weight": 0.0,
                "reward_models": [{"id": rm_id, "weight": 1.0, "normalize": True}],
            },
            "optim": {"total_steps": grpo_steps},
            "logging": {"save_every_steps": grpo_steps},
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
    before, after = held_out_rates(config, model), held_out_rates(config, str(exported))
    print(f"labels posted {posted}; reward model #{rm_id}: {rm}")
    for key in ("sampled", "greedy"):
        print(f"hidden-preference rate on held-out tasks, {key}: {before[key]:.3f} -> {after[key]:.3f}")
    print(f"train run dir {runs_dir}")
    return {"posted": posted, "stats": stats, "rm": rm, "before": before, "after": after}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_labels_to_reward_model_to_grpo_raise_the_hidden_preference(db_url: str, tmp_path: Path) -> None:
    result = closed_loop(
        tmp_path, "smollm2-135m", rollout_steps=ROLLOUT_STEPS, label_pairs_budget=LABEL_PAIRS, grpo_steps=GRPO_STEPS
    )
    assert result["posted"] >= 100
    assert result["stats"]["labels_by_labeler"]["script"] >= 100
    assert result["rm"]["heldout_accuracy"] >= 0.8, result["rm"]
    assert result["after"]["sampled"] - result["before"]["sampled"] >= 0.2
