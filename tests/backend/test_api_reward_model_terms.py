"""Reward models in environment rubrics, step scorers, and the bad inputs of issue #15 (each a clear 4xx)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session

from backend.crud import runs as runs_crud
from backend.crud import trajectories as traj_crud
from backend.models.trajectory import Label, Trajectory
from tests.backend.test_api_labels import _pair, _seed
from tests.backend.test_api_runs import API, traj_dict


def _trained(
    session: Session, client: TestClient, run_id: int, kind: str = "trajectory", scores: dict[str, float] | None = None
) -> int:
    """A reward model whose rm_train run succeeded (the worker's result written as rm_train_job writes it)."""
    rm = client.post(f"{API}/reward-models", json={"label_run_ids": [run_id], "min_pairs": 2, "kind": kind})
    assert rm.status_code == 201, rm.text
    result = {"kind": kind, "metrics": {"heldout_accuracy": 1}, "scores": scores or {}}
    runs_crud.save_result(session, run_id=rm.json()["id"], result=result)
    runs_crud.set_status(session, run_id=rm.json()["id"], status="succeeded")
    session.commit()
    return int(rm.json()["id"])


def _marks(client: TestClient, trajectory_id: int, *good: bool) -> None:
    body = {"kind": "step", "step_marks": [{"turn": k, "good": g} for k, g in enumerate(good)]}
    assert client.post(f"{API}/trajectories/{trajectory_id}/labels", json=body).status_code == 201


def _rubric(*terms: dict) -> dict:
    return {"name": "with-rm", "rubric": {"weights": {"exact_match": 1.0}, "reward_models": list(terms)}}


def test_environment_rubric_picks_trained_reward_models(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    _pair(client, ids[0], ids[1], "a", "ann")
    _pair(client, ids[0], ids[2], "a", "ann")
    _marks(client, ids[0], True, False)  # one good and one bad step in group g1: 1 step pair
    _marks(client, ids[1], False, True)  # + good turn 1 of ids[1] against two bad turns: 4 pairs in all
    rm_id, step_id = _trained(session, client, run_id), _trained(session, client, run_id, kind="step")
    assert client.get(f"{API}/reward-models/{step_id}").json()["kind"] == "step"
    assert client.get(f"{API}/reward-models/{rm_id}").json()["input"] == "text"
    terms = {"reward_model_id": rm_id, "weight": 0.5, "normalize": True}, {"reward_model_id": step_id, "step": True}
    env = client.post(f"{API}/environments", json=_rubric(*terms))
    assert env.status_code == 201, env.text
    spec = client.get(f"{API}/environments/{env.json()['id']}/versions/1").json()["spec"]
    assert spec["rubric"][1:] == [
        {"name": f"reward_model-{rm_id}", "weight": 0.5, "reward_model": rm_id, "normalize": True},
        {"name": f"step_reward_model-{step_id}", "weight": 1.0, "step_reward_model": step_id, "normalize": False},
    ]
    exported = client.get(f"{API}/environments/{env.json()['id']}/export").json()["environment"]
    assert client.post(f"{API}/environments/import", json={"spec": exported}).status_code == 201
    # a run may name a step scorer in its config too, with its kind checked
    wrong = {"kind": "train", "config": {"task": {"reward_models": [{"id": step_id}]}}}
    response = client.post(f"{API}/runs", json=wrong)
    assert response.status_code == 422
    assert f"reward model {step_id} is a step model; use it as step_reward_model" in response.json()["detail"]


def test_reward_model_ids_that_do_not_exist_or_do_not_fit_are_refused(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    _pair(client, ids[0], ids[1], "a", "ann")
    _pair(client, ids[0], ids[2], "a", "ann")
    rm_id = _trained(session, client, run_id)
    cases = [
        ({"reward_model_id": 4242}, "rubric.reward_models[0]: reward model 4242 does not exist"),
        ({"reward_model_id": run_id}, f"reward model {run_id} does not exist"),  # a run, not a reward model
        ({"reward_model_id": rm_id, "step": True}, f"reward model {rm_id} is a trajectory model; use it as reward_"),
    ]
    for term, needle in cases:
        response = client.post(f"{API}/environments", json=_rubric(term))
        assert response.status_code == 422, term
        assert needle in response.json()["detail"]
    imported = {"name": "x", "tools": [], "rubric": [{"name": "rm", "reward_model": 4242}]}
    response = client.post(f"{API}/environments/import", json={"spec": imported})
    assert response.status_code == 422
    assert "spec.rubric[0].reward_model: reward model 4242 does not exist" in response.json()["detail"]
    assert client.get(f"{API}/environments").json() == []  # nothing half-created


def test_too_few_step_marks_say_how_many_are_needed(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    _marks(client, ids[0], True, True)  # good steps only: nothing to contrast them with
    response = client.post(f"{API}/reward-models", json={"label_run_ids": [run_id], "kind": "step"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "too few labels to train a step scorer: 1 label(s)" in detail
    assert "0 preference pair(s), at least 8 are needed. Mark steps good and bad" in detail


def test_labels_outlive_their_trajectories_and_new_ones_are_refused(client: TestClient, session: Session) -> None:
    run_id, ids = _seed(client, session)
    for other in (ids[1], ids[2]):
        _pair(client, ids[0], other, "a", "ann")
    session.execute(delete(Trajectory).where(Trajectory.run_id == run_id))  # e.g. a retention cleanup
    session.commit()
    session.expire_all()
    response = client.post(f"{API}/trajectories/{ids[0]}/labels", json={"score": 1.0})
    assert response.status_code == 404
    assert response.json()["detail"] == f"trajectory {ids[0]} not found"
    labels = list(session.scalars(Label.__table__.select()))
    assert len(labels) == 2  # nothing lost: the labels keep their snapshots
    exported = client.get(f"{API}/runs/{run_id}/labels/export").text.splitlines()
    assert len(exported) == 2
    rm = client.post(f"{API}/reward-models", json={"label_run_ids": [run_id], "min_pairs": 2})
    assert rm.status_code == 201, rm.text  # they still train a reward model


def test_trajectory_page_shows_human_label_reward_model_score_and_automatic_reward(
    client: TestClient, session: Session
) -> None:
    run_id, ids = _seed(client, session)
    _pair(client, ids[0], ids[1], "a", "ann")
    _pair(client, ids[0], ids[2], "a", "ann")
    rm_id = _trained(session, client, run_id, scores={str(ids[0]): 2.5, str(ids[1]): -1.0})
    got = client.get(f"{API}/trajectories/{ids[0]}").json()
    assert got["reward_model_scores"] == {f"reward_model:{rm_id}": 2.5}
    assert got["automatic_reward"] == 1.0  # no reward model in its rubric: the reward itself
    assert got["labels"][0]["choice"] == "a"
    assert client.get(f"{API}/trajectories/{ids[3]}").json()["reward_model_scores"] == {}
    # a run rewarded by a reward model: its score and the rubric's own total come from the breakdown
    rewarded = {**traj_dict("g9", 1.7), "reward_breakdown": {"rubric": 1.0, f"reward_model:{rm_id}": 1.4}}
    traj_crud.bulk_insert(session, run_id=run_id, step=2, trajectories=[rewarded])
    session.commit()
    newest = client.get(f"{API}/trajectories", params={"run_id": run_id, "step": 2}).json()["items"][0]["id"]
    got = client.get(f"{API}/trajectories/{newest}").json()
    assert (got["reward"], got["automatic_reward"]) == (1.7, 1.0)
    assert got["reward_model_scores"] == {f"reward_model:{rm_id}": 1.4}
