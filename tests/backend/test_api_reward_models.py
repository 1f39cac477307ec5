"""Reward-model routes: queue rm_train, list/read with metrics and provenance, and every refusal with its message."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.crud import runs as runs_crud
from backend.queue import QUEUE_OF, TaskName
from tests.backend.test_api_labels import _pair, _seed
from tests.backend.test_api_runs import API


def test_too_few_labels_says_how_many_are_needed(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    _pair(client, ids[0], ids[1], "a", "ann")
    _pair(client, ids[3], ids[4], "tie", "ann")  # a tie gives no pair
    client.post(f"{API}/trajectories/{ids[0]}/labels", json={"score": 1.0})
    client.post(f"{API}/trajectories/{ids[1]}/labels", json={"score": 0.0})  # one pair implied by scores
    response = client.post(f"{API}/reward-models", json={"label_run_ids": [run_id]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "4 label(s)" in detail
    assert "2 preference pair(s), at least 8 are needed" in detail
    missing = client.post(f"{API}/reward-models", json={"label_run_ids": [run_id, 999]})
    assert missing.status_code == 422
    assert "run(s) [999] do not exist" in missing.json()["detail"]
    assert client.post(f"{API}/reward-models", json={"label_run_ids": []}).status_code == 422
    for view, needle in (
        ({"max_words": 5}, "unexpected keyword argument 'max_words'"),
        ({"max_answer_chars": 0}, ">= 1"),
    ):
        bad = client.post(f"{API}/reward-models", json={"label_run_ids": [run_id], "config": {"view": view}})
        assert bad.status_code == 422
        assert "config.view" in bad.json()["detail"]
        assert needle in bad.json()["detail"]


def test_create_list_get_and_use_in_a_run(client: TestClient, session: Session, enqueued: list) -> None:
    run_id, ids = _seed(client, session)
    for _ in range(2):
        _pair(client, ids[0], ids[1], "a", "ann")
        _pair(client, ids[0], ids[2], "a", "bob")
    response = client.post(
        f"{API}/reward-models",
        json={"label_run_ids": [run_id], "min_pairs": 4, "config": {"epochs": 1}, "name": "prefers-g1"},
    )
    assert response.status_code == 201, response.text
    rm = response.json()
    assert (rm["status"], rm["base_model"], rm["label_run_ids"], rm["name"]) == (
        "queued",
        "smollm2-135m",
        [run_id],
        "prefers-g1",
    )
    assert enqueued[-1] == (TaskName.RM_TRAIN, rm["id"])
    assert QUEUE_OF[TaskName.RM_TRAIN] == "gpu"
    # a run may not use it until it trained
    launch = {"kind": "train", "config": {"task": {"reward_models": [{"id": rm["id"], "weight": 1.0}]}}}
    refused = client.post(f"{API}/runs", json=launch)
    assert refused.status_code == 422
    assert f"reward model {rm['id']} is queued" in refused.json()["detail"]
    # the worker's result (what rm_train_job saves) shows up as metrics and provenance
    runs_crud.save_result(
        session,
        run_id=rm["id"],
        result={
            "artifact_dir": "/data/runs/reward-models/rm-2",
            "tokenizer": "smollm2",
            "label_ids": [1, 2, 3, 4],
            "metrics": {"heldout_accuracy": 0.9, "heldout_ece": 0.05, "train_pairs": 3, "heldout_pairs": 1},
        },
    )
    runs_crud.set_status(session, run_id=rm["id"], status="succeeded")
    session.commit()
    got = client.get(f"{API}/reward-models/{rm['id']}").json()
    assert (got["heldout_accuracy"], got["heldout_ece"], got["label_ids"], got["tokenizer"]) == (
        0.9,
        0.05,
        [1, 2, 3, 4],
        "smollm2",
    )
    assert [x["id"] for x in client.get(f"{API}/reward-models").json()] == [rm["id"]]
    assert client.post(f"{API}/runs", json=launch).status_code == 201
    unknown = {"kind": "train", "config": {"task": {"reward_models": [{"id": 4242}]}}}
    response = client.post(f"{API}/runs", json=unknown)
    assert response.status_code == 422
    assert "reward model 4242 does not exist" in response.json()["detail"]


def test_unknown_reward_model_is_404(client: TestClient, session: Session) -> None:
    run_id, _ = _seed(client, session)
    assert client.get(f"{API}/reward-models/4242").json() == {"detail": "reward model 4242 not found"}
    assert client.get(f"{API}/reward-models/{run_id}").status_code == 404  # a run, but not a reward model
