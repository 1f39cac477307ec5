"""User reward functions of both kinds through the API: the kind reaches the spec and the export file, the
signature is checked against it, and bad kinds (API or imported file) are refused naming the field."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
    assert "a 'step' reward takes (step, task)" in client.post(f"{API}/environments/import",
                                                               json={"spec": exported}).json()["detail"]  # fmt: skip
    exported["rubric"][user]["kind"] = "trajectory"
    exported["rubric"][0]["kind"] = "step"  # a built-in term
    refused = client.post(f"{API}/environments/import", json={"spec": exported})
    assert refused.json()["detail"].startswith("spec.rubric[0].kind: 'step' is for user reward functions")
