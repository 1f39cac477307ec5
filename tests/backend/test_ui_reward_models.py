"""The Environments tab picks trained reward models for the rubric (real `StudioClient` against the real API)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.client import StudioClient
from app.tabs import environments as tab
from tests.backend.test_api_labels import _pair, _seed
from tests.backend.test_api_reward_model_terms import _marks, _trained
from tests.backend.test_ui_environments import studio  # noqa: F401  (fixture)

FORM = [[], 0, 0, '{"exact_match": 1.0}', "", 0.5, "", 2, 32, 5, "", "", False, None]


def test_environment_rubric_picks_trained_reward_models_in_the_ui(
    studio: StudioClient,  # noqa: F811
    client: TestClient,
    session: Session,
) -> None:
    run_id, ids = _seed(client, session)
    _pair(client, ids[0], ids[1], "a", "ann")
    _pair(client, ids[0], ids[2], "a", "ann")
    _marks(client, ids[0], True, False)
    _marks(client, ids[1], False, True)
    rm_id, step_id = _trained(session, client, run_id), _trained(session, client, run_id, kind="step")
    choices = tab.reward_model_choices(studio)["choices"]
    assert [value for _, value in choices] == [f"step:{step_id}", f"trajectory:{rm_id}"]
    assert choices[1][0].startswith(f"reward_model:{rm_id} ")
    assert "held-out accuracy 1.00" in choices[1][0]
    picks = [f"trajectory:{rm_id}", f"step:{step_id}"]
    env_id, _picker, rows, status = tab.save_environment(studio, None, "judged", *FORM, "{}", picks, 0.5, True)
    assert status == "✅ Saved **judged** as version 1."
    assert rows[0][3] == f"exact_match×1.0, reward_model-{rm_id}×0.5, step_reward_model-{step_id}×0.5"
    loaded = tab.load_environment(studio, env_id)
    assert loaded[17:20] == (picks, 0.5, True)  # the picks come back into the form
    _, _, _, status = tab.save_environment(studio, None, "bad", *FORM, "{}", [f"step:{rm_id}"], 1.0, False)
    assert f"reward model {rm_id} is a trajectory model" in status
    _, _, _, status = tab.save_environment(studio, None, "bad", *FORM, "{}", ["4242"], 1.0, False)
    assert "is not '<kind>:<id>'" in status
