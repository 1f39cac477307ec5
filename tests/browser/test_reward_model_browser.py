"""Human labels become a reward, in a real browser against a real `studio up` stack (tiny random model).

Rollouts of a tiny random policy → label pairs (a/b keys) and steps (step marks + 1/0 keys) on the
Label tab → train a reward model from its Reward models panel → see its held-out accuracy → launch a
1-step run whose reward is that model from the Train tab. Tiny budgets throughout; each stage leaves a
screenshot in `test-artifacts/browser/` (prefix `rm-`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Stack
from tests.browser.test_studio_browser import fill, set_code, stage, wait_run
from tests.e2e.conftest import save_tiny_model

pytestmark = [pytest.mark.browser]
HEADERS = {"X-Studio-Client": "tests"}
JOB_TIMEOUT_S = 600.0
PAIRS = 8
STEP_MARKS = ("+", "-", "+", "-")


def tiny_config(model_dir: Path) -> dict[str, Any]:
    return {
        "model": {"name_or_path": str(model_dir), "device": "cpu"},
        "engine": {"backend": "hf"},
        "task": {"source": "demo", "eval_size": 2, "force_first_search": True, "top_k": 1, "max_passage_chars": 60},
        "rollout": {
            "prompts_per_step": 4,
            "group_size": 3,
            "max_turns": 2,
            "max_new_tokens_per_turn": 8,
            "max_total_tokens": 4096,
        },
        "optim": {"total_steps": 1},
        "eval": {"num_tasks": 0, "at_start": False},
        "logging": {"save_every_steps": 0},
    }


def api(stack: Stack, method: str, path: str, **kw: Any) -> Any:
    response = httpx.request(method, f"{stack.api_url}/api/v1{path}", headers=HEADERS, timeout=30, **kw)
    assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def press(page: Any, key: str, progress_id: str, text: str) -> None:
    """A labeling key with no text box focused (the Label tab's keyboard contract), then wait for its effect."""
    page.locator(f"#{progress_id}").click()
    page.keyboard.press(key)
    page.locator(f"#{progress_id}", has_text=text).wait_for(timeout=60_000)


def test_label_train_reward_model_and_run_on_it(studio_stack: Stack, browser_page: Any, tmp_path: Path) -> None:
    page, stack = browser_page, studio_stack
    model_dir = save_tiny_model(tmp_path / "tiny-llama")
    rollout = api(
        stack, "POST", "/runs", json={"kind": "rollout", "name": "rm-rollouts", "config": tiny_config(model_dir)}
    )
    done = wait_run(stack, rollout["id"], JOB_TIMEOUT_S)
    assert done["status"] == "succeeded", done["error"]
    run_id = rollout["id"]

    with stage(page, "rm-01-pairs", "GET /runs/{id}/pair-queue and pairwise POST /trajectories/{id}/labels"):
        page.get_by_role("tab", name="Label").click()
        page.get_by_role("tab", name="Pairwise").click()
        fill(page, "pair-run-id", str(run_id))
        page.locator("#pair-load").click()
        page.locator("#pair-view .as-traj").first.wait_for(timeout=60_000)
        for i in range(PAIRS):
            press(page, "ab"[i % 2], "pair-progress", f"{i + 1} pairs")

    with stage(page, "rm-02-steps", "step marks typed, then the 1/0 keys submit score + step labels"):
        page.get_by_role("tab", name="Score").click()
        fill(page, "label-run-id", str(run_id))
        page.locator("#label-load").click()
        page.locator("#label-view .as-traj").wait_for(timeout=60_000)
        for i, mark in enumerate(STEP_MARKS):
            page.locator("#label-step-marks textarea, #label-step-marks input").first.fill(mark)
            press(page, "1" if mark == "+" else "0", "label-progress", f"{i + 1} labeled")
        stats = api(stack, "GET", f"/runs/{run_id}/labels/stats")
        assert stats["labels_by_kind"]["step"] == len(STEP_MARKS)
        assert stats["labels_by_kind"]["pairwise"] == PAIRS

    with stage(page, "rm-03-train", "POST /reward-models from the Label tab; rm_train on the gpu queue"):
        page.get_by_role("tab", name="Reward models").click()
        fill(page, "rm-run-ids", str(run_id))
        fill(page, "rm-base-model", str(model_dir))
        page.locator("#rm-train").click()
        status = page.locator("#rm-status", has_text="queued")
        status.wait_for(timeout=60_000)
        rm_id = int(re.search(r"Reward model #(\d+)", status.inner_text()).group(1))  # type: ignore[union-attr]
        rm = wait_run(stack, rm_id, JOB_TIMEOUT_S)
        assert rm["status"] == "succeeded", rm["error"]

    with stage(page, "rm-04-accuracy", "GET /reward-models: held-out accuracy shown in the table"):
        accuracy = api(stack, "GET", f"/reward-models/{rm_id}")["heldout_accuracy"]
        assert accuracy is not None
        page.locator("#rm-refresh").click()
        # wait for the refreshed table: the one rendered while the job was queued already names the model
        row = page.locator("#rm-table", has_text=f"{accuracy:.3f}")  # the table (its rows render hidden twins)
        row.wait_for(timeout=60_000)
        assert f"reward_model:{rm_id}" in row.inner_text()

    with stage(page, "rm-05-run", "POST /runs with task.reward_models; the trainer batch-scores each step"):
        page.get_by_role("tab", name="Train").click()
        fill(page, "train-name", "rm-rewarded")
        config = tiny_config(model_dir)
        config["task"] = {**config["task"], "env_reward_weight": 0.0, "reward_models": [{"id": rm_id}]}
        page.get_by_text("Advanced overrides").click()
        set_code(page, "train-advanced", json.dumps(config))
        page.locator("#train-launch").click()
        card = page.locator("#runs-card", has_text="rm-rewarded")
        card.wait_for(timeout=60_000)
        train_id = int(re.search(r"Run #(\d+)", card.inner_text()).group(1))  # type: ignore[union-attr]
        run = wait_run(stack, train_id, JOB_TIMEOUT_S)
        assert run["status"] == "succeeded", run["error"]
        points = api(stack, "GET", f"/runs/{train_id}/metrics")["points"]
        assert f"reward/reward_model:{rm_id}" in points[-1]["values"]
        page.locator("#runs-card", has_text="succeeded").wait_for(timeout=60_000)
        deadline = time.monotonic() + 60
        plot = page.locator("#runs-plot .js-plotly-plot")
        while f"reward/reward_model:{rm_id}" not in plot.inner_text() and time.monotonic() < deadline:
            time.sleep(2)
        assert f"reward/reward_model:{rm_id}" in plot.inner_text(), "the RM-vs-automatic panel shows no RM curve"
