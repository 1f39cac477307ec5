"""Runs, metrics, checkpoints, trajectories, labels and evaluations through TestClient."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.crud import runs as runs_crud
from backend.crud import trajectories as traj_crud
from backend.queue import TaskName

API = "/api/v1"


def traj_dict(group: str, reward: float, *, parse_error: bool = False, truncated: bool = False) -> dict:
    turns = [
        {
            "role": "assistant",
            "text": "<tool_call>",
            "tool_calls": [{"name": "search", "arguments": {}}],
            "parse_error": "bad json" if parse_error else None,
        },
        {"role": "tool", "text": "result", "tool_error": False},
        {"role": "assistant", "text": "<answer>x</answer>", "tool_calls": []},
    ]
    return {
        "task_id": f"t-{group}",
        "group_id": group,
        "token_ids": [1, 2, 3],
        "loss_mask": [0, 1, 1],
        "logprobs": [None, -0.1, -0.2],
        "turns": turns,
        "reward": reward,
        "truncated": truncated,
        "finish_reason": "answer",
    }


def test_create_list_get_cancel_resume(client: TestClient, enqueued: list, session: Session) -> None:
    created = client.post(f"{API}/runs", json={"kind": "train", "preset": "quickstart", "config": {"seed": 3}})
    assert created.status_code == 201
    run = created.json()
    assert run["status"] == "queued"
    assert run["resumable"] is True
    assert enqueued == [(TaskName.TRAIN, run["id"])]
    assert (run["requested_config"], run["resolved_config"], run["auto_resumes"]) == ({"seed": 3}, None, 0)
    assert run["celery_task_id"]
    client.post(f"{API}/evaluations", json={"datasets": ["hotpotqa"], "methods": ["direct"], "limit": 2})
    assert enqueued[-1][0] == TaskName.EVALUATE
    assert client.post(f"{API}/runs", json={"kind": "bogus"}).status_code == 422
    assert client.post(f"{API}/runs", json={"kind": "train", "environment_id": 42}).status_code == 422

    page = client.get(f"{API}/runs", params={"kind": "train"}).json()
    assert page["total"] == 1
    assert page["items"][0]["id"] == run["id"]
    assert client.get(f"{API}/runs", params={"limit": 1}).json()["total"] == 2
    assert len(client.get(f"{API}/runs", params={"limit": 1}).json()["items"]) == 1
    assert client.get(f"{API}/runs", params={"status": "nope"}).status_code == 422

    assert client.post(f"{API}/runs/{run['id']}/resume").status_code == 409
    assert runs_crud.claim_run(session, run_id=run["id"], hostname="w1", stale_after_s=60)
    session.commit()
    cancelling = client.post(f"{API}/runs/{run['id']}/cancel").json()
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancel_requested"] is True
    runs_crud.set_status(session, run_id=run["id"], status="cancelled")
    session.commit()
    assert client.post(f"{API}/runs/{run['id']}/cancel").status_code == 409
    resumed = client.post(f"{API}/runs/{run['id']}/resume").json()
    assert resumed["status"] == "queued"
    assert resumed["requested_config"] == {"seed": 3}
    assert resumed["celery_task_id"] not in (None, run["celery_task_id"]), "a resume is sent as a new task"
    assert enqueued[-1] == (TaskName.TRAIN, run["id"])
    assert client.get(f"{API}/runs/999").status_code == 404
    assert client.post(f"{API}/runs/999/cancel").status_code == 404


def test_queued_cancel_is_immediate_and_ping_enqueues(client: TestClient, enqueued: list) -> None:
    run = client.post(f"{API}/runs", json={"kind": "rollout"}).json()
    assert client.post(f"{API}/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    ping = client.post(f"{API}/runs/ping").json()
    assert ping["kind"] == "ping"
    assert enqueued[-1] == (TaskName.PING, ping["id"])


def test_broker_failure_fails_the_run_with_503(client: TestClient) -> None:
    def broken(task: TaskName, run_id: int, *, task_id: str | None = None) -> str:
        raise ConnectionError("no broker")

    from backend.api.deps import get_enqueue

    client.app.dependency_overrides[get_enqueue] = lambda: broken
    response = client.post(f"{API}/runs/ping")
    assert response.status_code == 503
    run = client.get(f"{API}/runs").json()["items"][0]
    assert run["status"] == "failed"
    assert "no broker" in run["error"]


def test_metrics_incremental_and_checkpoints(client: TestClient, session: Session, enqueued: list) -> None:
    run = client.post(f"{API}/runs", json={"kind": "train"}).json()
    for step in (1, 2, 3):
        runs_crud.append_metrics(session, run_id=run["id"], step=step, values={"reward/mean": step / 10})
    runs_crud.append_metrics(session, run_id=run["id"], step=2, values={"reward/mean": 0.25})
    checkpoint = runs_crud.add_checkpoint(session, run_id=run["id"], step=3, path="/x/step_3")
    session.commit()
    page = client.get(f"{API}/runs/{run['id']}/metrics").json()
    assert [p["step"] for p in page["points"]] == [1, 2, 3]
    assert page["points"][1]["values"] == {"reward/mean": 0.25}
    later = client.get(f"{API}/runs/{run['id']}/metrics", params={"since": 2}).json()
    assert [p["step"] for p in later["points"]] == [3]
    assert later["last_step"] == 3
    assert client.get(f"{API}/runs/{run['id']}/metrics", params={"since": 3}).json()["last_step"] == 3
    assert client.get(f"{API}/runs/999/metrics").status_code == 404
    assert [c["step"] for c in client.get(f"{API}/runs/{run['id']}/checkpoints").json()] == [3]
    export = client.post(f"{API}/runs/{run['id']}/checkpoints/{checkpoint.id}/export")
    assert export.status_code == 202
    assert export.json()["requested_config"]["checkpoint_path"] == "/x/step_3"
    assert enqueued[-1] == (TaskName.EXPORT_CHECKPOINT, export.json()["id"])
    assert client.post(f"{API}/runs/{run['id']}/checkpoints/999/export").status_code == 404


def _seed_trajectories(client: TestClient, session: Session) -> int:
    run_id = client.post(f"{API}/runs", json={"kind": "rollout"}).json()["id"]
    batch = [
        traj_dict("g1", 1.0),
        traj_dict("g1", 0.0, parse_error=True),
        traj_dict("g2", 0.4),
        traj_dict("g2", 0.4, truncated=True),
        traj_dict("g3", 0.9),
    ]
    assert traj_crud.bulk_insert(session, run_id=run_id, step=1, trajectories=batch) == 5
    session.commit()
    return run_id


def test_trajectory_filters_detail_and_labels(client: TestClient, session: Session) -> None:
    run_id = _seed_trajectories(client, session)
    page = client.get(f"{API}/trajectories", params={"run_id": run_id}).json()
    assert page["total"] == 5
    assert "data" not in page["items"][0]
    assert page["items"][0]["num_turns"] == 2
    assert page["items"][0]["num_tool_calls"] == 1
    get = lambda **p: client.get(f"{API}/trajectories", params={"run_id": run_id, **p}).json()["total"]  # noqa: E731
    assert get(has_parse_error=True) == 1
    assert get(truncated=True) == 1
    assert get(min_reward=0.5) == 2
    assert get(max_reward=0.4) == 3
    assert get(step=2) == 0
    ids = sorted(t["id"] for t in page["items"])
    detail = client.get(f"{API}/trajectories/{ids[0]}").json()
    assert detail["data"]["token_ids"] == [1, 2, 3]
    assert detail["sibling_ids"] == [ids[1]]
    label = client.post(f"{API}/trajectories/{ids[0]}/labels", json={"score": 0.5, "note": "ok", "labeler": "ann"})
    assert label.status_code == 201
    client.post(f"{API}/trajectories/{ids[0]}/labels", json={"score": 1.0})
    assert [x["score"] for x in client.get(f"{API}/trajectories/{ids[0]}").json()["labels"]] == [1.0, 0.5]
    assert get(labeled=True) == 1
    assert get(labeled=False) == 4
    assert client.post(f"{API}/trajectories/{ids[0]}/labels", json={"score": 7}).status_code == 422
    assert client.post(f"{API}/trajectories/999/labels", json={"score": 0}).status_code == 404
    assert client.get(f"{API}/trajectories/999").status_code == 404


def test_label_queue_order_and_export(client: TestClient, session: Session) -> None:
    run_id = _seed_trajectories(client, session)
    queue = client.get(f"{API}/runs/{run_id}/label-queue").json()
    # g1 is the only mixed group (1.0 vs 0.0) so it comes first; then |reward - 0.5|: 0.4, 0.4, 0.9
    assert [(t["group_id"], t["reward"]) for t in queue] == [
        ("g1", 1.0),
        ("g1", 0.0),
        ("g2", 0.4),
        ("g2", 0.4),
        ("g3", 0.9),
    ]
    client.post(f"{API}/trajectories/{queue[0]['id']}/labels", json={"score": 1.0, "labeler": "ann"})
    after = client.get(f"{API}/runs/{run_id}/label-queue", params={"limit": 2}).json()
    assert [t["id"] for t in after] == [queue[1]["id"], queue[2]["id"]]
    export = client.get(f"{API}/runs/{run_id}/labels/export")
    assert export.status_code == 200
    lines = [line for line in export.text.splitlines() if line]
    assert len(lines) == 1
    assert '"labeler": "ann"' in lines[0]
    assert '"token_ids": [1, 2, 3]' in lines[0]
    assert client.get(f"{API}/runs/999/label-queue").status_code == 404
    assert client.get(f"{API}/runs/999/labels/export").status_code == 404


def test_evaluation_with_reference(client: TestClient, session: Session) -> None:
    run_id = client.post(f"{API}/evaluations", json={}).json()["id"]
    empty = client.get(f"{API}/runs/{run_id}/evaluation").json()
    assert empty["results"] is None
    assert empty["reference"]["GRPO"] == {"hotpotqa": 0.4405, "2wiki": 0.5741, "musique": 0.1485}
    assert empty["reference"]["REINFORCE++-baseline"]["musique"] == 0.1485
    runs_crud.add_evaluation(session, run_id=run_id, results={"hotpotqa": {"em": 0.1}})
    session.commit()
    assert client.get(f"{API}/runs/{run_id}/evaluation").json()["results"] == {"hotpotqa": {"em": 0.1}}
    assert client.get(f"{API}/runs/999/evaluation").status_code == 404


def test_evaluations_have_a_typed_request(client: TestClient, enqueued: list) -> None:
    body = {
        "datasets": ["hotpotqa", "2wiki"],
        "methods": ["agent"],
        "limit": 3,
        "checkpoint_path": "/c/step_2",
        "checkpoint_run_id": 1,
        "checkpoint_step": 2,
        "name": "eval me",
    }
    created = client.post(f"{API}/evaluations", json=body)
    assert created.status_code == 201
    run = created.json()
    assert (run["kind"], run["name"], run["requested_config"]) == ("eval", "eval me", {})
    assert run["eval_spec"]["methods"] == ["agent"]
    assert run["eval_spec"]["checkpoint_path"] == "/c/step_2"
    assert run["eval_spec"]["model"] == "smollm2-135m"
    assert enqueued[-1] == (TaskName.EVALUATE, run["id"])
    bad = client.post(f"{API}/evaluations", json={"methods": ["guess"]})
    assert bad.status_code == 422
    assert "methods" in str(bad.json()["detail"])
    unforced = client.post(f"{API}/evaluations", json={"methods": ["base-tool-call"], "forced_search_turns": 2})
    assert unforced.status_code == 422
    assert "needs force_first_search" in unforced.text
    too_many = {"methods": ["base-tool-call"], "force_first_search": True, "forced_search_turns": 4, "max_turns": 3}
    assert "exceeds max_turns=3" in client.post(f"{API}/evaluations", json=too_many).text
    unknown = client.post(f"{API}/evaluations", json={"datasets": ["hotpotqa"], "bogus": 1})
    assert unknown.status_code == 422
    assert "bogus" in str(unknown.json()["detail"])
    via_runs = client.post(f"{API}/runs", json={"kind": "eval", "preset": None})
    assert via_runs.status_code == 422
    assert "POST /evaluations" in str(via_runs.json()["detail"])


def test_private_config_keys_are_refused_by_name(client: TestClient, enqueued: list) -> None:
    for config, key in [
        ({"_auto_resumes": -1000}, "_auto_resumes"),
        ({"_eval": {}}, "_eval"),
        ({"rollout": {"_resume": True}}, "rollout._resume"),
    ]:
        response = client.post(f"{API}/runs", json={"kind": "train", "config": config})
        assert response.status_code == 422, config
        assert repr(key) in str(response.json()["detail"])
    assert enqueued == []


def test_create_run_validates_the_config_with_a_422_naming_the_field(client: TestClient, enqueued: list) -> None:
    bad = client.post(f"{API}/runs", json={"kind": "train", "config": {"rollout": {"group_size": 0}}})
    assert bad.status_code == 422
    assert "rollout.group_size" in bad.json()["detail"]
    unknown = client.post(f"{API}/runs", json={"kind": "rollout", "config": {"algorithm": {"estimatr": "grpo"}}})
    assert unknown.status_code == 422
    assert "algorithm.estimatr" in unknown.json()["detail"]
    literal = client.post(f"{API}/runs", json={"kind": "train", "config": {"algorithm": {"kl_estimator": "k9"}}})
    assert literal.status_code == 422
    assert "algorithm.kl_estimator must be one of k1, k2, k3" in literal.json()["detail"]
    assert client.get(f"{API}/runs").json()["total"] == 0, "a rejected run is never stored"
    assert enqueued == []
    ok = client.post(f"{API}/runs", json={"kind": "train", "config": {"rollout": {"group_size": 2}}})
    assert ok.status_code == 201
