"""Runs tab: every run with its status; one run's live curves, health alerts, cancel/resume.

A `gr.Timer` polls the selected run and fetches only new metric rows
(`GET /runs/{id}/metrics?since=last_step`); the points live in per-user `gr.State`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.render.alerts import health_alerts, render_alerts
from app.render.metrics import merge_points, metrics_figure
from app.render.runs import RUN_HEADERS, run_card, run_rows
from app.tabs.common import error_markdown, parse_optional_int
from backend.schemas.run import MetricPoint

STATUSES = ["all", "queued", "running", "succeeded", "failed", "cancelling", "cancelled"]
KINDS = ["all", "train", "eval", "rollout", "tool_test", "validate", "ping", "export"]
EMPTY_HINT = "No runs yet. Launch one from the **Train** tab (the quickstart preset runs on a CPU)."


@dataclass(frozen=True)
class RunsTab:
    """Component handles of the Runs tab."""

    status_filter: gr.Dropdown
    kind_filter: gr.Dropdown
    refresh: gr.Button
    table: gr.Dataframe
    hint: gr.Markdown
    run_id: gr.Number
    card: gr.Markdown
    alerts: gr.HTML
    plot: gr.Plot
    cancel: gr.Button
    resume: gr.Button
    jump_step: gr.Number
    jump: gr.Button
    points: gr.State
    timer: gr.Timer


def refresh_runs(client: StudioClient, status: str = "all", kind: str = "all") -> tuple[list[list[str]], str]:
    """The runs table (newest first) and an empty-state hint."""
    try:
        page = client.list_runs(status=None if status == "all" else status, kind=None if kind == "all" else kind)
    except StudioAPIError as exc:
        return [], error_markdown(exc)
    hint = "" if page.items else EMPTY_HINT
    if page.total > len(page.items):
        hint = f"Showing the newest {len(page.items)} of {page.total} runs."
    return run_rows(page.items), hint


def select_run(rows: Any, evt: gr.SelectData) -> int | None:
    """The run id of the clicked table row."""
    row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
    values = rows.values.tolist() if hasattr(rows, "values") else rows
    return int(values[row][0]) if values and row is not None and row < len(values) else None


def load_run(client: StudioClient, run_id: Any) -> tuple[Any, ...]:
    """Full load of one run: (card, alerts, figure, points)."""
    try:
        rid = parse_optional_int(run_id, "run id")
        if rid is None:
            return "Select a run in the table (or type its id) to see its curves.", "", None, []
        run = client.get_run(rid)
        points = client.get_metrics(rid).points
    except (StudioAPIError, ValueError) as exc:
        return error_markdown(exc), "", None, []
    return run_card(run), render_alerts(health_alerts(points)), metrics_figure(points, title=run.name), points


def poll_run(client: StudioClient, run_id: Any, points: list[MetricPoint]) -> tuple[Any, ...]:
    """Timer tick: refresh the card; fetch metric rows after the last known step; redraw only on new points."""
    try:
        rid = parse_optional_int(run_id, "run id")
        if rid is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        run = client.get_run(rid)
        since = points[-1].step if points else None
        new = client.get_metrics(rid, since=since).points
    except (StudioAPIError, ValueError) as exc:
        return f"⚠️ {exc}", gr.skip(), gr.skip(), gr.skip()
    if not new:
        return run_card(run), gr.skip(), gr.skip(), gr.skip()
    merged = merge_points(points, new)
    return run_card(run), render_alerts(health_alerts(merged)), metrics_figure(merged, title=run.name), merged


def cancel_run(client: StudioClient, run_id: Any) -> str:
    try:
        rid = parse_optional_int(run_id, "run id")
        if rid is None:
            raise ValueError("select a run first")
        return run_card(client.cancel_run(rid))
    except (StudioAPIError, ValueError) as exc:
        return error_markdown(exc)


def resume_run(client: StudioClient, run_id: Any) -> str:
    try:
        rid = parse_optional_int(run_id, "run id")
        if rid is None:
            raise ValueError("select a run first")
        return run_card(client.resume_run(rid))
    except (StudioAPIError, ValueError) as exc:
        return error_markdown(exc)


def build_runs_tab(client: StudioClient, *, poll_interval_s: float = 2.0) -> RunsTab:
    """Lay out the tab and wire its own events (cross-tab jumps are wired in `app.main`)."""
    with gr.Row():
        status_filter = gr.Dropdown(STATUSES, value="all", label="Status", scale=1)
        kind_filter = gr.Dropdown(KINDS, value="all", label="Kind", scale=1)
        refresh = gr.Button("Refresh", scale=1)
    hint = gr.Markdown()
    table = gr.Dataframe(
        headers=RUN_HEADERS, interactive=False, label="Runs (click a row to watch it)", elem_id="runs-table"
    )
    with gr.Row():
        run_id = gr.Number(label="Run id", precision=0, scale=1, elem_id="runs-run-id")
        cancel = gr.Button("Cancel run", variant="stop", scale=1)
        resume = gr.Button("Resume from last checkpoint", scale=1)
    card = gr.Markdown(elem_id="runs-card")
    alerts = gr.HTML(elem_id="runs-alerts")
    plot = gr.Plot(label="Training curves (live)", elem_id="runs-plot")
    with gr.Row():
        jump_step = gr.Number(
            label="Step", precision=0, scale=1, info="Read a step off a curve…", elem_id="runs-jump-step"
        )
        jump = gr.Button("…and show its trajectories", scale=1, elem_id="runs-jump")
    points = gr.State([])
    timer = gr.Timer(poll_interval_s)
    tab = RunsTab(
        status_filter,
        kind_filter,
        refresh,
        table,
        hint,
        run_id,
        card,
        alerts,
        plot,
        cancel,
        resume,
        jump_step,
        jump,
        points,
        timer,
    )
    _wire(tab, client)
    return tab


def _wire(tab: RunsTab, client: StudioClient) -> None:
    listing = functools.partial(refresh_runs, client)
    filters, listed = [tab.status_filter, tab.kind_filter], [tab.table, tab.hint]
    tab.refresh.click(listing, filters, listed, api_name="refresh_runs")
    for f in filters:
        f.change(listing, filters, listed, api_visibility="private")
    tab.table.select(select_run, [tab.table], [tab.run_id], api_visibility="private")
    watched = [tab.card, tab.alerts, tab.plot, tab.points]
    tab.run_id.change(functools.partial(load_run, client), [tab.run_id], watched, api_name="load_run")
    tab.timer.tick(listing, filters, listed, api_visibility="private", show_progress="hidden")
    tab.timer.tick(
        functools.partial(poll_run, client),
        [tab.run_id, tab.points],
        watched,
        api_visibility="private",
        show_progress="hidden",
    )
    tab.cancel.click(functools.partial(cancel_run, client), [tab.run_id], [tab.card], api_name="cancel_run")
    tab.resume.click(functools.partial(resume_run, client), [tab.run_id], [tab.card], api_name="resume_run")
