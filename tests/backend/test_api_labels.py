"""Pairwise and step labels, snapshots, the pair queue, progress and Cohen's kappa, JSONL import/export, errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.crud import runs as runs_crud
from backend.crud import trajectories as traj_crud
from backend.crud.labels import cohen_kappa
from backend.models.run import Run
from tests.backend.test_api_runs import API, traj_dict


def _seed(client: TestClient, session: Session) -> tuple[int, list[int]]:
    """A run with group g1 = (1.0, 0.0, 0.0) and g2 = (0.5, 0.5); returns (run id, trajectory ids)."""
    run_id = client.post(f"{API}/runs", json={"kind": "rollout"}).json()["id"]
    batch = [
        traj_dict("g1", 1.0),
        traj_dict("g1", 0.0),
        traj_dict("g1", 0.0),
        traj_dict("g2", 0.5),
        traj_dict("g2", 0.5),
    ]
    for i, trajectory in enumerate(batch):  # distinct answers: a reward model learns nothing from identical texts
        trajectory["final_answer"] = f"answer {i}"
    traj_crud.bulk_insert(session, run_id=run_id, step=1, trajectories=batch)
    session.commit()
    ids = sorted(t["id"] for t in client.get(f"{API}/trajectories", params={"run_id": run_id}).json()["items"])
    return run_id, ids


def _pair(client: TestClient, a: int, b: int, choice: str, labeler: str) -> dict:
    body = {"kind": "pairwise", "other_trajectory_id": b, "choice": choice, "labeler": labeler}
    response = client.post(f"{API}/trajectories/{a}/labels", json=body)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("a", "a"), ("b", "b"), ("a", "b"), ("b", "a")], 0.0),  # p_o = 0.5 = p_e
        ([("a", "a"), ("b", "b"), ("tie", "tie")], 1.0),
        ([("a", "a"), ("a", "a"), ("a", "b"), ("b", "b")], (0.75 - 0.5) / 0.5),  # p_e = 3/4*2/4 + 1/4*2/4
        ([], None),
    ],
)
def test_cohen_kappa_by_hand(pairs: list[tuple[str, str]], expected: float | None) -> None:
    assert cohen_kappa(pairs) == (pytest.approx(expected) if expected is not None else None)


def test_pairwise_and_step_labels_keep_a_snapshot(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    label = _pair(client, ids[0], ids[1], "a", "ann")
    assert (label["kind"], label["choice"], label["run_id"], label["group_id"]) == ("pairwise", "a", run_id, "g1")
    assert label["score"] is None
    marks = [{"turn": 0, "good": True}, {"turn": 1, "good": False}]
    step = client.post(f"{API}/trajectories/{ids[0]}/labels", json={"kind": "step", "step_marks": marks})
    assert step.status_code == 201
    assert step.json()["step_marks"] == marks
    # trajectory B sees the pairwise label too
    assert [x["kind"] for x in client.get(f"{API}/trajectories/{ids[1]}").json()["labels"]] == ["pairwise"]
    # deleting the run keeps the labels and their snapshots
    session.delete(session.get(Run, run_id))
    session.commit()
    lines = [json.loads(x) for x in client.get(f"{API}/runs/{run_id}/labels/export").text.splitlines()]
    assert [x["kind"] for x in lines] == ["pairwise", "step"]
    assert lines[0]["trajectory_id"] is None
    assert lines[0]["trajectory"]["token_ids"] == [1, 2, 3]
    assert lines[0]["other_trajectory"]["reward"] == 0.0
    # the export of a deleted run imports again: the snapshots carry the labels, nothing links
    exported = "\n".join(json.dumps(x) for x in lines)
    assert client.post(f"{API}/labels/import", content=exported).json() == {"imported": 2, "linked": 0}
    missing_b = json.dumps({**lines[0], "other_trajectory": None})
    response = client.post(f"{API}/labels/import", content=missing_b)
    assert response.status_code == 422
    assert "needs `other_trajectory`" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"kind": "pairwise", "choice": "a"}, 422, "other_trajectory_id"),
        ({"kind": "pairwise", "other_trajectory_id": 999_999, "choice": "a"}, 404, "trajectory 999999 not found"),
        ({"kind": "pairwise", "other_trajectory_id": "G2", "choice": "a"}, 422, "not another member"),
        ({"kind": "pairwise", "other_trajectory_id": "SELF", "choice": "a"}, 422, "not another member"),
        ({"kind": "step", "step_marks": []}, 422, "step_marks"),
        ({"kind": "step", "step_marks": [{"turn": 5, "good": True}]}, 422, "out of range"),
        ({"kind": "step", "step_marks": [{"turn": 0, "good": True}, {"turn": 0, "good": False}]}, 422, "repeat"),
        ({"kind": "score"}, 422, "score"),
    ],
)
def test_label_errors_name_the_problem(
    client: TestClient, session: Session, body: dict, status: int, needle: str
) -> None:
    _, ids = _seed(client, session)
    other = {"G2": ids[3], "SELF": ids[0]}
    if body.get("other_trajectory_id") in other:
        body = {**body, "other_trajectory_id": other[body["other_trajectory_id"]]}
    response = client.post(f"{API}/trajectories/{ids[0]}/labels", json=body)
    assert response.status_code == status
    assert needle in response.text


def test_label_on_missing_trajectory_is_404_with_message(client: TestClient) -> None:
    response = client.post(
        f"{API}/trajectories/424242/labels", json={"kind": "pairwise", "other_trajectory_id": 1, "choice": "a"}
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "trajectory 424242 not found"


def test_pair_queue_puts_mixed_pairs_first_and_drops_labeled_ones(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    queue = client.get(f"{API}/runs/{run_id}/pair-queue").json()
    pairs = [(p["a"]["id"], p["b"]["id"], p["reason"]) for p in queue]
    # g1 has two mixed pairs (1.0 vs 0.0) and one tie in reward; g2's only pair has equal rewards
    assert pairs[:2] == [(ids[0], ids[1], "mixed rewards"), (ids[0], ids[2], "mixed rewards")]
    assert {p[:2] for p in pairs[2:]} == {(ids[1], ids[2]), (ids[3], ids[4])}
    assert all(p[2] == "uncertain" for p in pairs[2:])
    _pair(client, ids[1], ids[0], "b", "ann")  # either orientation counts as labeled
    first = client.get(f"{API}/runs/{run_id}/pair-queue").json()[0]
    assert (first["a"]["id"], first["b"]["id"]) == (ids[0], ids[2])
    assert client.get(f"{API}/runs/999/pair-queue").status_code == 404


def test_queue_uses_reward_model_disagreement(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    rm_run = runs_crud.create_job_run(session, kind="rm_train", name="rm", config={"label_run_ids": [run_id]})
    # the model prefers ids[1] over ids[0] although the automatic reward says the opposite
    scores = {str(ids[0]): -2.0, str(ids[1]): 3.0, str(ids[2]): -3.0, str(ids[3]): 0.1, str(ids[4]): 0.0}
    runs_crud.set_status(session, run_id=rm_run.id, status="succeeded")
    rm_run.result = {"scores": scores}
    session.commit()
    queue = client.get(f"{API}/runs/{run_id}/pair-queue").json()
    assert (queue[0]["a"]["id"], queue[0]["b"]["id"], queue[0]["reason"]) == (ids[0], ids[1], "reward model disagrees")
    # among the equal-reward pairs, the one the model is least sure about (g2: 0.1 vs 0.0) comes first
    assert (queue[2]["a"]["id"], queue[2]["b"]["id"]) == (ids[3], ids[4])


def test_stats_progress_labelers_and_kappa(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    # two labelers judge the same three pairs; they agree on two (one given in the other orientation)
    _pair(client, ids[0], ids[1], "a", "ann")
    _pair(client, ids[1], ids[0], "b", "bob")
    _pair(client, ids[0], ids[2], "a", "ann")
    _pair(client, ids[0], ids[2], "b", "bob")
    _pair(client, ids[3], ids[4], "tie", "ann")
    _pair(client, ids[4], ids[3], "tie", "bob")
    for labeler, good in (("ann", True), ("bob", True)):
        client.post(
            f"{API}/trajectories/{ids[0]}/labels",
            json={"kind": "step", "labeler": labeler, "step_marks": [{"turn": 0, "good": good}]},
        )
    client.post(f"{API}/trajectories/{ids[0]}/labels", json={"score": 1.0, "labeler": "ann"})
    stats = client.get(f"{API}/runs/{run_id}/labels/stats").json()
    assert stats["trajectories"] == 5
    assert stats["labeled_trajectories"] == 5
    assert stats["labels_by_kind"] == {"pairwise": 6, "step": 2, "score": 1}
    assert stats["labels_by_labeler"] == {"ann": 5, "bob": 4}
    pw = stats["pairwise_kappa"]
    assert pw["items"] == 3
    assert pw["agreement"] == pytest.approx(2 / 3)
    # ann: (a, a, tie), bob: (a, b, tie) → p_o = 2/3, p_e = (2*1 + 0*1 + 1*1)/9 = 1/3
    assert pw["kappa"] == pytest.approx((2 / 3 - 1 / 3) / (1 - 1 / 3))
    assert stats["step_kappa"] == {"kappa": 1.0, "items": 1, "agreement": 1.0}
    assert client.get(f"{API}/runs/999/labels/stats").status_code == 404


def test_export_import_round_trip_and_bad_lines(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    _pair(client, ids[0], ids[1], "a", "ann")
    client.post(f"{API}/trajectories/{ids[2]}/labels", json={"score": -0.5, "labeler": "bob", "note": "meh"})
    exported = client.get(f"{API}/runs/{run_id}/labels/export").text
    assert all(json.loads(x)["format"] == "agent-studio.label/v1" for x in exported.splitlines())
    bad = exported + '{"format": "agent-studio.label/v1", "kind": "pairwise", "trajectory": {"turns": []}}\n'
    response = client.post(f"{API}/labels/import", content=bad)
    assert response.status_code == 422
    assert "line 3" in response.json()["detail"]
    assert client.get(f"{API}/runs/{run_id}/labels/stats").json()["labels_by_kind"] == {"pairwise": 1, "score": 1}
    assert client.post(f"{API}/labels/import", content="not json\n").json()["detail"].startswith("line 1: not JSON")
    assert client.post(f"{API}/labels/import", content="").status_code == 422
    report = client.post(f"{API}/labels/import", content=exported)
    assert report.status_code == 201
    assert report.json() == {"imported": 2, "linked": 2}
    again = [json.loads(x) for x in client.get(f"{API}/runs/{run_id}/labels/export").text.splitlines()]
    assert [(x["kind"], x["labeler"], x["score"], x["choice"]) for x in again] == [
        ("pairwise", "ann", None, "a"),
        ("score", "bob", -0.5, None),
        ("pairwise", "ann", None, "a"),
        ("score", "bob", -0.5, None),
    ]
    assert again[2]["other_trajectory"] == again[0]["other_trajectory"]
