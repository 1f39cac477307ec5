"""A new user's own environment, end to end in a real browser against a real `studio up` stack.

Upload a task file and a document corpus → write a Python tool that reads the corpus (mounted read-only in
its sandbox) and a reward function → compose an environment → Check it → train 2 tiny steps on the
bundled model → replay a trajectory showing the tool's call and result, the user reward term in the
breakdown and the pinned environment version → evaluate the checkpoint on the held-out split. Each stage
leaves a screenshot in `test-artifacts/browser/` (prefix `own-`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Stack
from tests.browser.test_studio_browser import fill, set_code, stage, wait_run

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]  # ~4 min on an idle 2-core host; slack for busy ones

UI_TIMEOUT_MS = 120_000
JOB_TIMEOUT_S = 900.0
NAMES = ["Zorvex", "Quillan", "Marbeck", "Tessaly", "Orvane", "Pellith", "Drumond", "Kestrel", "Vantor", "Solenne"]
TOOL_SOURCE = '''import glob
import json
import os


def lookup(query: str) -> str:
    """Look a name up in the uploaded documents.

    Args:
        query: The name to look up.
    """
    base = os.environ.get("STUDIO_TOOL_DATA", "/data")
    for path in glob.glob(os.path.join(base, "*")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)
                if doc["title"].lower() in query.lower():
                    return doc["text"]
    return f"no document matches {query!r}"
'''
REWARD_SOURCE = '''def reward(answer: str, gold: list[str], trajectory: dict) -> float:
    """1 when a gold code appears in the answer."""
    return float(any(g in answer for g in gold))
'''
TINY_RUN = {
    "rollout": {"group_size": 2, "prompts_per_step": 2, "max_turns": 2, "max_new_tokens_per_turn": 20},
    "optim": {"total_steps": 2},
    "eval": {"num_tasks": 0, "at_start": False},
    "logging": {"save_every_steps": 1},
}


def api(stack: Stack, path: str, **params: Any) -> Any:
    response = httpx.get(f"{stack.api_url}/api/v1{path}", params=params, timeout=30)
    assert response.status_code < 400, f"GET {path}: {response.status_code} {response.text}"
    return response.json()


def write_files(folder: Path) -> tuple[Path, Path]:
    tasks = folder / "codes.jsonl"
    corpus = folder / "docs.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"question": f"What is the code of {n}?", "answer": str(4100 + i)}) + "\n"
            for i, n in enumerate(NAMES)
        )
    )
    corpus.write_text(
        "".join(json.dumps({"title": n, "text": f"The code of {n} is {4100 + i}."}) + "\n" for i, n in enumerate(NAMES))
    )
    return tasks, corpus


def pick(page: Any, elem_id: str, option: str) -> None:
    """Choose a gr.Dropdown option by the start of its label."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=re.compile("^" + re.escape(option))).first.click()


def upload(page: Any, path: Path, kind: str) -> int:
    """Upload one file on the Environments tab as `kind`; the registered dataset's id."""
    page.locator("#env-upload-kind").get_by_label(kind, exact=True).check()
    clear = page.locator("#env-upload-file button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#env-upload-file input[type=file]").set_input_files(str(path))
    page.locator("#env-upload-file").get_by_text(path.name).first.wait_for(timeout=UI_TIMEOUT_MS)
    page.locator("#env-upload").click()
    status = page.locator("#env-status", has_text=re.compile(rf"Registered {re.escape(path.stem)}.*dataset #\d+"))
    status.wait_for(timeout=UI_TIMEOUT_MS)
    return int(re.search(r"dataset #(\d+)", status.inner_text()).group(1))  # type: ignore[union-attr]


def tool_trajectory(stack: Stack, run_id: int) -> dict[str, Any]:
    """A stored trajectory of the run in which the user's tool was called and returned a result."""
    page = api(stack, "/trajectories", run_id=run_id, limit=100)
    for item in page["items"]:
        detail = api(stack, f"/trajectories/{item['id']}")
        if any(
            t["role"] == "tool" and t.get("name") == "lookup" and not t.get("tool_error")
            for t in detail["data"]["turns"]
        ):
            return detail  # type: ignore[no-any-return]
    raise AssertionError(f"none of the run's {page['total']} trajectories called lookup successfully")


def test_own_environment_upload_compose_check_train_replay_evaluate(
    studio_stack: Stack, browser_page: Any, tmp_path: Path
) -> None:
    page, stack = browser_page, studio_stack
    tasks_file, corpus_file = write_files(tmp_path)

    with stage(page, "own-01-upload", "POST /datasets/upload (tasks, then corpus) from the Environments tab"):
        page.get_by_role("tab", name="Environments").click()
        tasks_id = upload(page, tasks_file, "tasks")
        corpus_id = upload(page, corpus_file, "corpus")
        assert tasks_id != corpus_id

    with stage(page, "own-02-tool", "POST /tools: the user's Python tool, tried once in the sandbox"):
        page.get_by_role("tab", name="Tools").click()
        fill(page, "tool-name", "lookup")
        set_code(page, "tool-source", TOOL_SOURCE)
        page.locator("#tool-save").click()
        page.locator("#tools-status", has_text="as version 1").wait_for(timeout=UI_TIMEOUT_MS)

    with stage(page, "own-03-compose", "POST /environments from the form: tool, data, corpus file, reward, prefill"):
        page.get_by_role("tab", name="Environments").click()
        page.locator("#env-refresh").click()
        page.locator("#env-tools").get_by_label("lookup (v1)").check()
        pick(page, "env-dataset", f"#{tasks_id} ")
        pick(page, "env-corpus", f"#{corpus_id} ")
        fill(page, "env-name", "codes")
        set_code(page, "env-weights", '{"exact_match": 1.0}')
        fill(page, "env-reward-name", "has_code")
        fill(page, "env-reward-weight", "1")
        set_code(page, "env-reward-source", REWARD_SOURCE)
        fill(page, "env-max-new", "20")
        fill(page, "env-forced", "lookup")
        page.locator("#env-answer-prefill input").check()
        set_code(page, "env-tool-access", json.dumps({"lookup": {"files": [corpus_id]}}))
        page.locator("#env-save").click()
        page.locator("#env-status", has_text="as version 1").wait_for(timeout=UI_TIMEOUT_MS)
        env = next(e for e in api(stack, "/environments") if e["name"] == "codes")
        spec = api(stack, f"/environments/{env['id']}/versions/1")["spec"]
        assert [t["name"] for t in spec["rubric"]] == ["exact_match", "has_code"]
        assert list(spec["tools"][0]["files"]) == [Path(api(stack, f"/datasets/{corpus_id}")["location"]).name]

    with stage(page, "own-04-check", "environments.validate on a cpu worker: the env checker with the tool sandboxed"):
        page.locator("#env-check").click()
        status = page.locator("#env-check-status", has_text=re.compile("passed|problem"))
        status.wait_for(timeout=JOB_TIMEOUT_S * 1000)
        assert "All checks passed" in status.inner_text(), status.inner_text()

    with stage(page, "own-05-train", "POST /runs with the environment (pinned version) and a tiny budget"):
        page.reload(wait_until="load")  # the Train tab lists environments when the page loads
        page.get_by_role("tab", name="Train").click()
        fill(page, "train-name", "own-env-tiny")
        pick(page, "train-environment", f"#{env['id']} codes")
        page.locator("#train-env-summary", has_text="lookup").wait_for(timeout=UI_TIMEOUT_MS)
        page.get_by_text("Advanced overrides").click()
        set_code(page, "train-advanced", json.dumps(TINY_RUN))
        page.locator("#train-launch").click()
        card = page.locator("#runs-card", has_text="own-env-tiny")
        card.wait_for(timeout=UI_TIMEOUT_MS)
        run_id = int(re.search(r"Run #(\d+)", card.inner_text()).group(1))  # type: ignore[union-attr]
        page.locator("#runs-card", has_text="environment codes v1").wait_for(timeout=UI_TIMEOUT_MS)
        run = wait_run(stack, run_id, JOB_TIMEOUT_S)
        assert run["status"] == "succeeded", f"training run ended {run['status']}: {run['error']}"
        assert run["environment_version_id"] is not None
        metrics = api(stack, f"/runs/{run_id}/metrics")["points"][-1]["values"]
        assert "reward/has_code" in metrics, sorted(metrics)

    with stage(page, "own-06-replay", "GET /trajectories/{id}: the tool call, its result, the user reward term"):
        traj = tool_trajectory(stack, run_id)
        result = next(t["text"] for t in traj["data"]["turns"] if t["role"] == "tool" and t.get("name") == "lookup")
        page.get_by_role("tab", name="Trajectories").click()
        fill(page, "traj-id", str(traj["id"]))
        replay = page.locator("#traj-replay .as-traj")
        replay.wait_for(timeout=UI_TIMEOUT_MS)
        page.locator("#traj-replay .role-tool", has_text="tool · lookup").first.wait_for(timeout=UI_TIMEOUT_MS)
        text = replay.inner_text()
        assert result.strip()[:40] in text, "the tool's result is not in the replay"
        assert '"name": "lookup"' in text, "the tool call is not shown"
        assert "has_code" in page.locator("#traj-replay table.as-breakdown").last.inner_text()
        assert "environment codes v1" in text

    with stage(page, "own-07-evaluate", "an eval run on the environment's held-out split with the run's checkpoint"):
        page.reload(wait_until="load")  # the checkpoint picker lists train runs when the page loads
        page.get_by_role("tab", name="Evaluate").click()
        pick(page, "eval-source-run", f"#{run_id} ")
        fill(page, "eval-limit", "2")
        page.locator("#eval-env-refresh").click()
        pick(page, "eval-env-picker", f"#{env['id']} codes")
        page.locator("#eval-env-start").click()
        card = page.locator("#eval-env-card", has_text="Run #")
        card.wait_for(timeout=UI_TIMEOUT_MS)
        eval_id = int(re.search(r"Run #(\d+)", card.inner_text()).group(1))  # type: ignore[union-attr]
        run = wait_run(stack, eval_id, JOB_TIMEOUT_S)
        assert run["status"] == "succeeded", f"eval run ended {run['status']}: {run['error']}"
        page.locator("#eval-env-card", has_text="succeeded").wait_for(timeout=UI_TIMEOUT_MS)
        page.locator("#eval-env-report", has_text="has_code").wait_for(timeout=UI_TIMEOUT_MS)
        assert run["environment_version_id"] is not None
