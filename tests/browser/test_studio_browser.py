"""The studio as a new user meets it, in a real browser against a real `studio up` stack.

Define a tool and try it → launch a 2-step quickstart run on the bundled model →
watch the curve → replay a trajectory (tool blocks, mask colours) → label it →
evaluate. Each stage leaves a screenshot in `test-artifacts/browser/` and fails
with a message naming what was missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS, Stack

pytestmark = [pytest.mark.browser]

TOOL_SOURCE = '''def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: The text to upper-case.
    """
    return text.upper()
'''
TINY_RUN = (
    '{"rollout": {"group_size": 2, "prompts_per_step": 1, "max_turns": 2, "max_new_tokens_per_turn": 32}, '
    '"optim": {"total_steps": 2}, "eval": {"num_tasks": 0, "at_start": false}, '
    '"logging": {"save_every_steps": 1}}'
)
TRAIN_TIMEOUT_S = 1500.0
EVAL_TIMEOUT_S = 900.0


@contextmanager
def stage(page: Any, name: str, hint: str) -> Iterator[None]:
    """Screenshot after the stage; on failure, a message saying which stage and what to check."""
    try:
        yield
    except Exception as exc:
        page.screenshot(path=str(ARTIFACTS / f"FAILED-{name}.png"), full_page=True)
        pytest.fail(f"stage '{name}' failed: {exc.__class__.__name__}: {str(exc)[:800]}\nhint: {hint}")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def set_code(page: Any, elem_id: str, text: str) -> None:
    """Replace a gr.Code editor's content (insert_text avoids CodeMirror's auto-indent)."""
    page.locator(f"#{elem_id} .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def fill(page: Any, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(value)
    box.press("Enter")


def api_run(stack: Stack, run_id: int) -> dict[str, Any]:
    return httpx.get(f"{stack.api_url}/api/v1/runs/{run_id}", timeout=10).json()  # type: ignore[no-any-return]


def wait_run(stack: Stack, run_id: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = api_run(stack, run_id)
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(5)
    raise TimeoutError(f"run {run_id} still {api_run(stack, run_id)['status']} after {timeout_s:.0f} s")


def test_new_user_journey(studio_stack: Stack, browser_page: Any) -> None:
    page = browser_page
    expect_timeout = 60_000
    with stage(page, "01-home", "the UI could not reach the API or the health check failed"):
        page.get_by_text("Workers").first.wait_for(timeout=expect_timeout)

    with stage(page, "02-tool-test", "POST /tools and POST /tools/{id}/test (tools.test job on a cpu worker)"):
        page.get_by_role("tab", name="Tools").click()
        fill(page, "tool-name", "shout")
        set_code(page, "tool-source", TOOL_SOURCE)
        page.locator("#tool-save").click()
        page.locator("#tools-status", has_text="as version 1").wait_for(timeout=expect_timeout)
        set_code(page, "tool-test-args", '{"text": "hello"}')
        page.locator("#tool-test").click()
        page.locator("#tool-test-status", has_text="Returned").wait_for(timeout=120_000)
        assert "HELLO" in page.locator("#tool-test-status").inner_text()

    with stage(page, "03-launch", "POST /runs with preset quickstart and overrides"):
        page.get_by_role("tab", name="Train").click()
        fill(page, "train-name", "browser-tiny")
        page.get_by_text("Advanced overrides").click()
        set_code(page, "train-advanced", TINY_RUN)
        page.locator("#train-launch").click()
        # Launching switches to the Runs tab, which then watches the new run.
        card = page.locator("#runs-card", has_text="browser-tiny")
        card.wait_for(timeout=expect_timeout)
        run_id = int(re.search(r"Run #(\d+)", card.inner_text()).group(1))  # type: ignore[union-attr]

    with stage(page, "04-curve", "runs.train job: metrics after each step (GET /runs/{id}/metrics)"):
        page.locator("#runs-card", has_text=f"Run #{run_id}").wait_for(timeout=expect_timeout)
        run = wait_run(studio_stack, run_id, TRAIN_TIMEOUT_S)
        assert run["status"] == "succeeded", f"training run ended {run['status']}: {run['error']}"
        page.locator("#runs-card", has_text="succeeded").wait_for(timeout=expect_timeout)
        page.locator("#runs-plot .js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=expect_timeout)

    with stage(page, "05-replay", "trajectories stored by the train job (GET /trajectories?run_id&step)"):
        fill(page, "runs-jump-step", "1")
        page.locator("#runs-jump").click()
        page.locator("#traj-info", has_text="trajectories").wait_for(timeout=expect_timeout)
        page.locator("#traj-replay .as-traj").wait_for(timeout=expect_timeout)  # the first listed one opens
        assert page.locator("#traj-replay .role-tool").count() > 0, "no tool block in the replay"
        assert page.locator("#traj-replay .tok.mask-1[title*='logprob']").count() > 0
        assert page.locator("#traj-replay .tok.mask-0").count() > 0

    with stage(page, "06-label", "GET /runs/{id}/label-queue and POST /trajectories/{id}/labels"):
        page.get_by_role("tab", name="Label").click()
        fill(page, "label-run-id", str(run_id))
        page.locator("#label-load").click()
        page.locator("#label-view .as-traj").wait_for(timeout=expect_timeout)
        page.locator("#label-progress").click()
        page.keyboard.press("1")
        page.locator("#label-progress", has_text="1 labeled").wait_for(timeout=expect_timeout)

    with stage(
        page,
        "07-evaluate",
        "runs.evaluate job (worker.rl.evaluation.runner:evaluate_config reading "
        "POST /evaluations) and GET /runs/{id}/evaluation",
    ):
        page.get_by_role("tab", name="Evaluate").click()
        fill(page, "eval-limit", "2")
        page.locator("#eval-start").click()
        card = page.locator("#eval-card", has_text="Run #")
        card.wait_for(timeout=expect_timeout)
        eval_id = int(re.search(r"Run #(\d+)", card.inner_text()).group(1))  # type: ignore[union-attr]
        run = wait_run(studio_stack, eval_id, EVAL_TIMEOUT_S)
        assert run["status"] == "succeeded", f"eval run ended {run['status']}: {run['error']}"
        page.locator("#eval-table", has_text="hotpotqa").wait_for(timeout=expect_timeout)
