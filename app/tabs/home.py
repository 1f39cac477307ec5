"""Home tab: is the stack healthy, and what to do next (the first-run guide).

The guide adapts to what exists: no tools → write one; no runs → launch the
quickstart; a finished run → replay, label, evaluate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gradio as gr

from app.client import StudioAPIError, StudioClient
from backend.schemas.health import HealthPublic


@dataclass(frozen=True)
class HomeTab:
    """Component handles of the Home tab."""

    health: gr.Markdown
    guide: gr.Markdown
    refresh: gr.Button


def health_markdown(health: HealthPublic) -> str:
    """One line per component with what to do when it is down."""

    def line(ok: bool, name: str, detail: str, fix: str) -> str:
        return f"- {'✅' if ok else '❌'} **{name}** {detail}" + ("" if ok else f" — {fix}")

    db = health.db
    lines = [
        line(
            db.ok,
            "Database",
            f"({db.dialect}, schema {db.revision or '?'})" if db.ok else f"({db.error or 'behind'})",
            "run `studio db upgrade`",
        ),
        line(
            health.broker.ok,
            "Broker",
            f"({health.broker.url})" if health.broker.ok else f"({health.broker.error})",
            "start Redis, or use `studio up` (embedded Redis)",
        ),
        line(
            health.workers.ok,
            "Workers",
            f"({', '.join(health.workers.hostnames)})" if health.workers.ok else f"({health.workers.error})",
            "start one with `studio worker` (runs stay queued until then)",
        ),
    ]
    if health.stale_runs:
        lines.append(
            f"- ⚠️ {health.stale_runs} run(s) lost their worker; a worker's sweeper resumes or fails them shortly."
        )
    return "\n".join(lines)


def guide_markdown(client: StudioClient) -> str:
    """Next steps based on what the user already has."""
    tools = client.list_tools()
    runs = client.list_runs(kind="train", limit=5)
    steps = []
    if not tools:
        steps.append("**Tools**: write your first tool (an example is prefilled) and try a call.")
    if runs.total == 0:
        steps.append(
            "**Train**: launch the *quickstart* preset — the bundled SmolLM2-135M on a built-in search "
            "task, on the CPU — and watch it on **Runs**."
        )
    else:
        newest = runs.items[0]
        steps.append(f"**Runs**: your newest training run is #{newest.id} ({newest.status}). Watch its curves.")
        steps.append(f"**Trajectories**: replay run #{newest.id}'s episodes turn by turn; **Label** them by hand.")
    steps.append("**Evaluate**: score the base model or a checkpoint on HotpotQA / 2Wiki / MuSiQue in one click.")
    return "#### Next steps\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, start=1))


def refresh_home(client: StudioClient) -> tuple[str, str]:
    """(health, guide); an unreachable API is explained, not a traceback."""
    try:
        return health_markdown(client.health()), guide_markdown(client)
    except StudioAPIError as exc:
        return f"❌ **{exc}**", "Start the whole stack with `studio up`, then press **Check again**."


def build_home_tab(client: StudioClient) -> HomeTab:
    """Lay out the tab and wire its button (the page-load refresh is wired in `app.main`)."""
    gr.Markdown(
        "Agent Studio trains tool-using LLM agents with multi-turn RL: define tools, launch training, watch "
        "it live, replay trajectories turn by turn, label rewards, evaluate on multi-hop QA."
    )
    health = gr.Markdown("Checking the stack…", elem_id="home-health")
    guide = gr.Markdown(elem_id="home-guide")
    refresh = gr.Button("Check again")
    tab = HomeTab(health, guide, refresh)
    tab.refresh.click(functools.partial(refresh_home, client), None, [tab.health, tab.guide], api_name="health")
    return tab
