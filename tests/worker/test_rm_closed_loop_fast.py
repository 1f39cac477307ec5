"""The fast closed loop (default suite): a scripted labeler judges pairs through the API the Label tab uses,
`rm_train` fits a tiny random model on those labels, and the reward model must rank held-out pairs far above
chance. Learning, not plumbing: the preference (the answer quotes the retrieved title in brackets) is hidden
from the trainer, which sees only the labeler's choices; the held-out groups were never trained on.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from backend.api.deps import get_enqueue
from backend.main import create_app
from tests.backend.conftest import LOOPBACK_URL
from worker import jobs
from worker.store import SqlRunStore

API = "/api/v1"
CITIES = ["Paris", "Berlin", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Dakar"]
GROUPS = 16


def episode(group: str, city: str, quotes_title: bool, reward: float) -> dict[str, Any]:
    answer = f"{city} [{city}]" if quotes_title else city
    turns = [
        {"role": "user", "text": f"Which city is the {group} museum in?"},
        {"role": "assistant", "text": "<tool_call>", "tool_calls": [{"name": "search", "arguments": {"query": city}}]},
        {"role": "tool", "text": f"{city}: a city.", "name": "search"},
        {"role": "assistant", "text": f"<answer>{answer}</answer>", "tool_calls": []},
    ]
    return {
        "task_id": f"t-{group}",
        "group_id": group,
        "token_ids": [1, 2, 3],
        "loss_mask": [0, 1, 1],
        "logprobs": [None, -0.1, -0.2],
        "turns": turns,
        "reward": reward,
        "final_answer": answer,
        "finish_reason": "answer",
    }


def prefers(data: dict[str, Any]) -> bool:
    """The hidden preference: the final answer quotes the searched title in brackets."""
    answer = str(data.get("final_answer") or "")
    return answer.endswith("]") and "[" in answer


def label_pairs(client: TestClient, run_id: int) -> int:
    """The scripted labeler: A/B by the hidden preference, tie when both or neither satisfy it."""
    posted = 0
    while queue := client.get(f"{API}/runs/{run_id}/pair-queue", params={"limit": 50}).json():
        for pair in queue:
            a = client.get(f"{API}/trajectories/{pair['a']['id']}").json()["data"]
            b = client.get(f"{API}/trajectories/{pair['b']['id']}").json()["data"]
            choice = "tie" if prefers(a) == prefers(b) else ("a" if prefers(a) else "b")
            body = {"kind": "pairwise", "other_trajectory_id": pair["b"]["id"], "choice": choice, "labeler": "script"}
            assert client.post(f"{API}/trajectories/{pair['a']['id']}/labels", json=body).status_code == 201
            posted += 1
    return posted


def test_scripted_labels_train_a_reward_model_far_above_chance(
    db_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(0)
    app = create_app()
    app.dependency_overrides[get_enqueue] = lambda: lambda task, run_id, **_: f"task-{run_id}"
    store = SqlRunStore()
    # a loopback origin and the header the studio's own clients send (the API's CSRF guard)
    with TestClient(app, base_url=LOOPBACK_URL, headers={"X-Studio-Client": "tests"}) as client:
        run_id = client.post(f"{API}/runs", json={"kind": "rollout"}).json()["id"]
        for g in range(GROUPS):  # the automatic reward is noise: only the labels carry the preference
            city = rng.choice(CITIES)
            batch = [episode(f"g{g}", city, quotes, rng.random()) for quotes in (True, False, True, False)]
            store.save_trajectories(run_id, g // 4 + 1, batch)
        assert label_pairs(client, run_id) == GROUPS * 6  # every same-group pair, ties included
        config = {"epochs": 4, "learning_rate": 3e-3, "max_length": 96, "device": "cpu", "heldout_fraction": 0.25}
        body = {"label_run_ids": [run_id], "base_model": str(tiny_model_dir), "config": config}
        created = client.post(f"{API}/reward-models", json=body)
        assert created.status_code == 201, created.text
        rm_id = created.json()["id"]
        jobs.rm_train_job(rm_id, store, hostname="test", runs_dir=tmp_path / "runs")
        rm = client.get(f"{API}/reward-models/{rm_id}").json()
    assert rm["status"] == "succeeded", rm["error"]
    assert rm["train_pairs"] + rm["heldout_pairs"] == GROUPS * 4  # the 4 non-tie pairs of each group
    assert rm["heldout_pairs"] >= 12
    assert rm["heldout_accuracy"] >= 0.8, rm  # chance is 0.5
