"""The Evaluate tab's run comparison in a real browser against a real `studio up` stack.

A one-step train run of a tiny random model (built in-process) saves a checkpoint; the compare
section then evaluates it beside two baselines of the same tiny model on two HotpotQA examples:
one table, the grouped chart, the side-by-side predictions, and a trajectory opened in the replay.
Each stage leaves a screenshot in `test-artifacts/browser/compare-*.png`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Stack
from tests.browser.test_studio_browser import fill, stage, wait_run

pytestmark = [pytest.mark.browser]

HEADERS = {"X-Studio-Client": "browser-test"}
TRAIN_TIMEOUT_S = 900.0
COMPARE_TIMEOUT_S = 900.0
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.e2e.conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def train_tiny(stack: Stack, model: Path) -> int:
    """A one-step quickstart run of the tiny model that saves its checkpoint (through the API)."""
    config = {
        "model": {"name_or_path": str(model)},
        "rollout": {"group_size": 2, "prompts_per_step": 1, "max_turns": 2, "max_new_tokens_per_turn": 16},
        "optim": {"total_steps": 1},
        "eval": {"num_tasks": 0, "at_start": False},
        "logging": {"save_every_steps": 1},
    }
    body = {"kind": "train", "preset": "quickstart", "name": "compare-tiny", "config": config}
    created = httpx.post(f"{stack.api_url}/api/v1/runs", json=body, headers=HEADERS, timeout=30)
    assert created.status_code == 201, created.text
    run_id = int(created.json()["id"])
    run = wait_run(stack, run_id, TRAIN_TIMEOUT_S)
    assert run["status"] == "succeeded", f"tiny training run ended {run['status']}: {run['error']}"
    return run_id


def visible(scope: Any, text: str) -> Any:
    """The first visible element with `text` (a Gradio Dataframe keeps hidden copies of its cells)."""
    return scope.get_by_text(text).filter(visible=True).first


def wait_comparison(stack: Stack, comparison_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + COMPARE_TIMEOUT_S
    while time.monotonic() < deadline:
        comparison: dict[str, Any] = httpx.get(f"{stack.api_url}/api/v1/comparisons/{comparison_id}", timeout=10).json()
        if comparison["status"] in ("succeeded", "failed"):
            return comparison
        time.sleep(3)
    raise TimeoutError(f"comparison {comparison_id} not finished after {COMPARE_TIMEOUT_S:.0f} s")


def test_compare_checkpoint_with_baselines(studio_stack: Stack, browser_page: Any, tiny_model: Path) -> None:
    page = browser_page
    with stage(page, "compare-01-checkpoint", "POST /runs (tiny model, 1 step) and GET /runs/{id}/checkpoints"):
        run_id = train_tiny(studio_stack, tiny_model)
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#cmp-refresh").click()
        page.locator("#cmp-checkpoints label", has_text=f"run #{run_id}").first.click()
        for name in ("2wiki", "musique"):
            page.locator("#cmp-datasets label", has_text=name).click()
        fill(page, "cmp-limit", "2")
        fill(page, "cmp-model", str(tiny_model))

    with stage(page, "compare-02-table", "POST /comparisons → eval runs → GET /comparisons/{id} (table, chart)"):
        page.locator("#cmp-start").click()
        card = page.locator("#cmp-card", has_text="Comparison #")
        card.wait_for(timeout=UI_TIMEOUT_MS)
        comparison_id = int(re.search(r"Comparison #(\d+)", card.inner_text()).group(1))  # type: ignore[union-attr]
        comparison = wait_comparison(studio_stack, comparison_id)
        errors = [m["error"] for m in comparison["members"]]
        assert comparison["status"] == "succeeded", f"comparison members failed: {errors}"
        page.locator("#cmp-card", has_text="succeeded").wait_for(timeout=UI_TIMEOUT_MS)
        table = page.locator("#cmp-table")
        for label in (f"run #{run_id} step 1", "naive-rag", "base-tool-call"):
            visible(table, label).wait_for(timeout=UI_TIMEOUT_MS)
        assert table.get_by_text("Naive RAG").filter(visible=True).count() > 0, (
            "the paper row is missing beside naive-rag"
        )
        # an untrained tiny model scores 0, so its bars have no height: wait for the traces to exist
        page.locator("#cmp-plot .js-plotly-plot .barlayer .trace").first.wait_for(
            state="attached", timeout=UI_TIMEOUT_MS
        )
        assert page.locator("#cmp-plot .barlayer .trace").count() >= 4, "expected our 3 rows plus paper rows"

    with stage(page, "compare-03-side-by-side", "examples of two rows paired by task id, with trajectory ids"):
        side = page.locator("#cmp-side")
        visible(side, "prediction").wait_for(timeout=UI_TIMEOUT_MS)
        page.locator("#cmp-side-info", has_text="2 examples").wait_for(timeout=UI_TIMEOUT_MS)
        agent = [e for e in comparison["examples"] if e["label"].startswith(f"run #{run_id}")]
        assert len(agent) == 2
        assert all(e["trajectory_id"] for e in agent), "the agent's predictions must link to trajectories"

    with stage(page, "compare-04-replay", "a trajectory id from the side-by-side opens in the Trajectories replay"):
        side.get_by_text(str(agent[0]["trajectory_id"]), exact=True).filter(visible=True).first.click()
        from playwright.sync_api import expect

        # the click's handler fills the box after a round trip: wait for the value, not only for the box
        expect(page.locator("#cmp-traj-id input").first).to_have_value(
            str(agent[0]["trajectory_id"]), timeout=UI_TIMEOUT_MS
        )
        page.locator("#cmp-replay").click()
        page.locator("#traj-replay .as-traj").wait_for(timeout=UI_TIMEOUT_MS)
        assert page.locator("#traj-replay .role-tool").count() > 0, "the forced first search left no tool block"

    with stage(page, "compare-05-reopen", "GET /comparisons lists it; picking it shows the table again"):
        page.get_by_role("tab", name="Evaluate").click()
        page.reload(wait_until="load")
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#cmp-past input").first.click()
        page.get_by_role("option", name=re.compile(f"^#{comparison_id} ")).click()
        visible(page.locator("#cmp-table"), "base-tool-call").wait_for(timeout=UI_TIMEOUT_MS)
