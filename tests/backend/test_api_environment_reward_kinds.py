"""User reward functions of both kinds through the API: the kind reaches the spec and the export file, the
signature is checked against it, and bad kinds (API or imported file) are refused naming the field."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.backend.test_api_environments import API, REWARD_SOURCE, _environment

STEP_SOURCE = "def reward(step, task):\n    return 0.1 * len(step['results'])\n"


def _rubric(**function: object) -> dict[str, object]:
    return {"weights": {"exact_match": 1.0}, "functions": [{"name": "r", "weight": 0.5, **function}]}


def test_step_kind_reaches_the_spec_and_round_trips_through_export(client: TestClient) -> None:
    env, _tool, _tasks = _environment(client)
    patched = client.patch(f"{API}/environments/{env['id']}", json={"rubric": _rubric(source=STEP_SOURCE, kind="step")})
    assert patched.status_code == 200, patched.text
    assert patched.json()["rubric"]["functions"][0]["kind"] == "step"
    spec = client.get(f"{API}/environments/{env['id']}/versions/2").json()["spec"]
    term = next(t for t in spec["rubric"] if t["name"] == "r")
    assert (term["kind"], term["source"]) == ("step", STEP_SOURCE)
    v1 = client.get(f"{API}/environments/{env['id']}/versions/1").json()["spec"]
    assert next(t for t in v1["rubric"] if t["name"] == "in_gold")["kind"] == "trajectory"  # the default
    exported = client.get(f"{API}/environments/{env['id']}/export").json()["environment"]
    imported = client.post(f"{API}/environments/import", json={"spec": exported, "name": "copy"})
    assert imported.status_code == 201, imported.text
    copy = client.get(f"{API}/environments/{imported.json()['id']}/versions/1").json()["spec"]
    assert next(t for t in copy["rubric"] if t["name"] == "r")["kind"] == "step"


def test_signature_must_match_the_kind_and_errors_name_the_field(client: TestClient) -> None:
    env, _tool, _tasks = _environment(client)
    wrong = client.patch(f"{API}/environments/{env['id']}", json={"rubric": _rubric(source=REWARD_SOURCE, kind="step")})
    assert wrong.status_code == 422
    assert wrong.json()["detail"] == (
        "rubric.functions.r: a 'step' reward takes (step, task), got ['answer', 'gold', 'trajectory']; that is a "
        "'trajectory' function: set kind = 'trajectory'"
    )
    other = client.patch(f"{API}/environments/{env['id']}", json={"rubric": _rubric(source=STEP_SOURCE)})
    assert other.json()["detail"].startswith("rubric.functions.r: a 'trajectory' reward takes (answer, gold, ")
    assert other.json()["detail"].endswith("set kind = 'step'")
    bogus = client.patch(f"{API}/environments/{env['id']}", json={"rubric": _rubric(source=STEP_SOURCE, kind="turn")})
    assert bogus.status_code == 422
    assert "kind" in str(bogus.json()["detail"])
    assert client.get(f"{API}/environments/{env['id']}").json()["version"] == 1


def test_import_refuses_bad_kinds_naming_the_term(client: TestClient) -> None:
    env, _tool, _tasks = _environment(client)
    exported = client.get(f"{API}/environments/{env['id']}/export").json()["environment"]
    user = next(i for i, t in enumerate(exported["rubric"]) if t.get("key"))
    exported["rubric"][user]["kind"] = "turn"
    refused = client.post(f"{API}/environments/import", json={"spec": exported})
    assert refused.status_code == 422
    assert refused.json()["detail"] == "spec.rubric.in_gold.kind: 'turn' is not one of trajectory, step"
    exported["rubric"][user]["kind"] = "step"  # a trajectory function's source under the step kind
    assert (
        "a 'step' reward takes (step, task)"
        in client.post(f"{API}/environments/import", json={"spec": exported}).json()["detail"]
    )
    exported["rubric"][user]["kind"] = "trajectory"
    exported["rubric"][0]["kind"] = "step"  # a built-in term
    refused = client.post(f"{API}/environments/import", json={"spec": exported})
    assert refused.json()["detail"].startswith("spec.rubric[0].kind: 'step' is for user reward functions")


def test_run_card_and_replay_name_the_pinned_environment_version(client: TestClient, session: Session) -> None:
    from app.render.runs import run_card
    from app.render.trajectory import render_trajectory
    from backend.crud import trajectories as traj_crud
    from backend.schemas.run import RunPublic
    from backend.schemas.trajectory import TrajectoryPublic
    from tests.backend.test_api_runs import traj_dict

    env, _tool, _tasks = _environment(client)
    client.patch(f"{API}/environments/{env['id']}", json={"name": "units-renamed"})
    versions = client.get(f"{API}/environments/{env['id']}/versions").json()
    run = client.post(f"{API}/runs", json={"environment_id": env["id"], "environment_version_id": versions[0]["id"]})
    body = run.json()
    assert (body["environment_name"], body["environment_version"]) == ("units", 1)  # the pinned version's name
    listed = client.get(f"{API}/runs").json()["items"][0]
    assert (listed["environment_name"], listed["environment_version"]) == ("units", 1)
    assert "environment units v1" in run_card(RunPublic.model_validate(body))
    plain = client.post(f"{API}/runs", json={"kind": "rollout"}).json()
    assert plain["environment_version"] is None
    assert "environment " not in run_card(RunPublic.model_validate(plain))
    traj_crud.bulk_insert(session, run_id=body["id"], step=1, trajectories=[traj_dict("g1", 1.0)])
    session.commit()
    tid = client.get(f"{API}/trajectories", params={"run_id": body["id"]}).json()["items"][0]["id"]
    detail = client.get(f"{API}/trajectories/{tid}").json()
    assert (detail["environment_name"], detail["environment_version"]) == ("units", 1)
    assert "environment units v1" in render_trajectory(TrajectoryPublic.model_validate(detail))
