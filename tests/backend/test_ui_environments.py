"""The Environments and Train tab handlers through the real `StudioClient` against the real API (TestClient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.client import StudioClient
from app.tabs import environments as tab
from app.tabs.train import describe_environment
from backend.queue import TaskName
from backend.schemas.tool import ToolCreate
from tests.backend.conftest import LOOPBACK_URL

TOOL_SOURCE = '''
def km_to_miles(km: float) -> float:
    """Convert kilometres to miles.

    Args:
        km: Distance in kilometres.
    """
    return round(km * 0.621371, 2)
'''


@pytest.fixture
def studio(client: TestClient) -> StudioClient:
    studio = StudioClient("http://testserver")
    studio._http = TestClient(client.app, base_url=f"{LOOPBACK_URL}/api/v1", headers={"X-Studio-Client": "tests"})
    return studio


def _form(tool_id: int, dataset_id: int) -> list[object]:
    return [
        [tool_id],
        dataset_id,
        0,
        '{"exact_match": 1.0}',
        "near",
        0.5,
        tab.EXAMPLE_REWARD,
        2,
        32,
        5,
        "Use the tool. Answer in <{answer_tag}></{answer_tag}>.",
        "km_to_miles",
        True,
        0.25,
    ]


def test_new_user_flow_upload_compose_prompt_check_export_import(
    studio: StudioClient, tmp_path: Path, enqueued: list
) -> None:
    csv = tmp_path / "units.csv"
    csv.write_text("q,a\n" + "".join(f"How many miles are {i} km?,{round(i * 0.621371, 2)}\n" for i in range(1, 9)))
    preview, status = tab.upload_file(studio, str(csv), "tasks", "auto", "q", "a", "", "", dry_run=True)
    assert preview["records"] == 8
    assert preview["first_rows"][0]["question"] == "How many miles are 1 km?"
    assert status.startswith("Preview: 8 valid record(s)")
    _preview, status = tab.upload_file(studio, str(csv), "tasks", "auto", "q", "a", "", "units", dry_run=False)
    assert "Registered **units**" in status
    dataset = studio.list_datasets()[0]
    tool = studio.create_tool(ToolCreate(name="km_to_miles", source=TOOL_SOURCE))
    env_id, _picker, rows, status = tab.save_environment(studio, None, "units", *_form(tool.id, dataset.id))
    assert status == "✅ Saved **units** as version 1."
    assert rows[0][2] == "km_to_miles"
    assert rows[0][3] == "exact_match×1.0, near×0.5"
    loaded = tab.load_environment(studio, env_id)
    assert loaded[1] == "units"
    assert loaded[-2] == rows
    env_id, _picker, rows, status = tab.save_environment(studio, env_id, "units", *_form(tool.id, dataset.id))
    assert [r[0] for r in rows] == ["2", "1"]
    prompt, note = tab.show_prompt(studio, env_id)
    assert prompt["system_prompt"] == "Use the tool. Answer in <answer></answer>."
    assert prompt["first_turn_prefill"].startswith('<tool_call>{"name": "km_to_miles"')
    assert "token count" in note
    run_id, status, _report, _timer = tab.start_check(studio, env_id)
    assert enqueued[-1] == (TaskName.VALIDATE_ENV, run_id)
    text, _status = tab.export_environment(studio, env_id)
    assert json.loads(text)["environment"]["tools"][0]["source"] == TOOL_SOURCE
    assert tab.import_environment(studio, text).startswith("✅ Imported as environment #2")
    summary = describe_environment(studio, env_id)
    assert "tools `km_to_miles`" in summary
    assert "units: 8 tasks, 25% held out" in summary
    assert "rubric exact_match×1.0, near×0.5" in summary


def test_evaluate_tab_launches_an_eval_pinned_to_the_environment(studio: StudioClient, enqueued: list) -> None:
    from app.tabs.evaluate import build_env_eval_request, start_env_evaluation

    tool = studio.create_tool(ToolCreate(name="km_to_miles", source=TOOL_SOURCE))
    env_id, *_ = tab.save_environment(studio, None, "units", *_form(tool.id, 0))
    with pytest.raises(ValueError, match="environment: pick one"):
        build_env_eval_request(studio, None, None, "", 5)
    run_id, _card, _timer = start_env_evaluation(studio, env_id, None, "", 5)
    run = studio.get_run(run_id)
    assert (run.kind, run.environment_id, run.eval_spec["limit"]) == ("eval", env_id, 5)
    assert run.environment_version_id == studio.list_environment_versions(env_id)[0].id
    assert enqueued[-1] == (TaskName.EVALUATE, run_id)


def test_retriever_choice_is_saved_in_the_spec_and_loaded_back(studio: StudioClient) -> None:
    """The field after the reward-model fields picks the search retriever of the version's corpus."""
    tool = studio.create_tool(ToolCreate(name="km_to_miles", source=TOOL_SOURCE))
    form = [*_form(tool.id, 0), "{}", [], 1.0, False]
    env_id, _picker, _rows, status = tab.save_environment(studio, None, "dense", *form, "dense")
    assert status == "✅ Saved **dense** as version 1."
    assert studio.list_environment_versions(env_id)[0].spec["corpus"] == {"location": None, "retriever": "dense"}
    assert tab.load_environment(studio, env_id)[-4] == "dense"
    env_id, *_ = tab.save_environment(studio, None, "sparse", *form)  # the field left out: BM25
    assert studio.list_environment_versions(env_id)[0].spec["corpus"]["retriever"] == "bm25"
    *_, status = tab.save_environment(studio, None, "bad", *form, "tfidf")
    assert "retriever" in status


def test_tool_network_and_files_are_set_and_shown_in_the_environments_tab(studio: StudioClient, tmp_path: Path) -> None:
    csv = tmp_path / "units.csv"
    csv.write_text("q,a\nHow many miles are 1 km?,0.62\nHow many miles are 2 km?,1.24\n")
    tab.upload_file(studio, str(csv), "tasks", "auto", "q", "a", "", "units", dry_run=False)
    dataset = studio.list_datasets()[0]
    tool = studio.create_tool(ToolCreate(name="km_to_miles", source=TOOL_SOURCE))
    access = json.dumps({"km_to_miles": {"network": ["api.example.com:8443"], "files": [dataset.id]}})
    env_id, _picker, rows, status = tab.save_environment(studio, None, "units", *_form(tool.id, dataset.id), access)
    assert status == "✅ Saved **units** as version 1."
    name = Path(dataset.location).name
    assert rows[0][4] == f"km_to_miles: net api.example.com:8443; /data/{name}"
    loaded = tab.load_environment(studio, env_id)
    assert json.loads(loaded[-8]) == {"km_to_miles": {"network": ["api.example.com:8443"], "files": [dataset.id]}}
    bad = json.dumps({"km_to_miles": {"network": ["https://api.example.com"]}})
    *_, status = tab.save_environment(studio, env_id, "units", *_form(tool.id, dataset.id), bad)
    assert "is not a host[:port]" in status
    _id, _p, rows, _s = tab.save_environment(studio, env_id, "units", *_form(tool.id, dataset.id), "{}")
    assert rows[0][4] == "no network, no files"


def test_the_reward_kind_is_set_in_the_rubric_editor_and_loaded_back(studio: StudioClient) -> None:
    tool = studio.create_tool(ToolCreate(name="km_to_miles", source=TOOL_SOURCE))
    form = _form(tool.id, 0)
    form[6] = tab.EXAMPLE_STEP_REWARD
    extra = ["{}", [], 1.0, False, "bm25"]  # tool access, reward models, their weight and z-score, retriever
    env_id, _picker, rows, status = tab.save_environment(studio, None, "units", *form, *extra, "step")
    assert status == "✅ Saved **units** as version 1."
    assert rows[0][3] == "exact_match×1.0, near×0.5 (step)"
    assert studio.get_environment(env_id).rubric.functions[0].kind == "step"
    loaded = tab.load_environment(studio, env_id)
    assert (loaded[-3], loaded[8]) == ("step", tab.EXAMPLE_STEP_REWARD)
    *_, status = tab.save_environment(studio, env_id, "units", *_form(tool.id, 0), *extra, "step")
    assert "rubric.functions.near: a 'step' reward takes (step, task)" in status  # the trajectory example
    assert tab.example_for_kind("step", tab.EXAMPLE_REWARD) == tab.EXAMPLE_STEP_REWARD
    assert tab.example_for_kind("trajectory", "def reward(step, task):\n    return 1.0\n") is not None


def test_refreshing_the_lists_after_an_upload_keeps_its_status_line(studio: StudioClient) -> None:
    lists = tab.refresh_lists(studio)
    assert len(lists) == 4  # picker, tools, tasks, corpora: the "Registered ..." status is not overwritten
