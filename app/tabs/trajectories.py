"""Trajectories tab: filter a run's rollouts, replay one turn by turn, compare its GRPO group.

The replay shows system/user/assistant/tool blocks, pretty tool calls, rewards,
and every token coloured by loss mask with its logprob on hover.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.render.compare import render_group
from app.render.trajectory import render_trajectory
from app.tabs.common import TRI_STATE, error_markdown, parse_optional_float, parse_optional_int, tri_state
from backend.schemas.trajectory import TrajectorySummary

HEADERS = ["ID", "Run", "Step", "Group", "Reward", "Turns", "Tool calls", "Finish", "Flags"]
PAGE_SIZE = 50
MAX_GROUP = 16


@dataclass(frozen=True)
class TrajectoriesTab:
    """Component handles of the Trajectories tab."""

    run_id: gr.Number
    step: gr.Number
    min_reward: gr.Number
    max_reward: gr.Number
    parse_error: gr.Dropdown
    tool_error: gr.Dropdown
    truncated: gr.Dropdown
    labeled: gr.Dropdown
    page: gr.Number
    search: gr.Button
    table: gr.Dataframe
    info: gr.Markdown
    trajectory_id: gr.Number
    replay: gr.HTML
    group: gr.HTML

    @property
    def filters(self) -> list[Any]:
        return [
            self.run_id,
            self.step,
            self.min_reward,
            self.max_reward,
            self.parse_error,
            self.tool_error,
            self.truncated,
            self.labeled,
            self.page,
        ]


def _flags(t: TrajectorySummary) -> str:
    names = (("parse", t.has_parse_error), ("tool", t.has_tool_error), ("truncated", t.truncated))
    return ", ".join(name for name, on in names if on)


def summary_rows(items: list[TrajectorySummary]) -> list[list[Any]]:
    return [
        [
            t.id,
            t.run_id,
            t.step,
            t.group_id,
            round(t.reward, 4),
            t.num_turns,
            t.num_tool_calls,
            t.finish_reason,
            _flags(t),
        ]
        for t in items
    ]


def search_trajectories(
    client: StudioClient,
    run_id: Any,
    step: Any,
    min_reward: Any,
    max_reward: Any,
    parse_error: str,
    tool_error: str,
    truncated: str,
    labeled: str,
    page: Any,
) -> tuple[Any, str]:
    """One filtered page: (rows, info line)."""
    try:
        page_no = max(1, parse_optional_int(page, "page") or 1)
        result = client.list_trajectories(
            run_id=parse_optional_int(run_id, "run id"),
            step=parse_optional_int(step, "step"),
            min_reward=parse_optional_float(min_reward, "min reward"),
            max_reward=parse_optional_float(max_reward, "max reward"),
            has_parse_error=tri_state(parse_error),
            has_tool_error=tri_state(tool_error),
            truncated=tri_state(truncated),
            labeled=tri_state(labeled),
            offset=(page_no - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), error_markdown(exc)
    if not result.items:
        return [], (
            "No trajectories match. A training run stores its trajectories after each step; "
            "loosen the filters or pick another run/step."
        )
    pages = (result.total + PAGE_SIZE - 1) // PAGE_SIZE
    return summary_rows(
        result.items
    ), f"{result.total} trajectories · page {page_no} of {pages} · click a row to replay"


def _table_rows(rows: Any) -> list[list[Any]]:
    return rows.values.tolist() if hasattr(rows, "values") else list(rows or [])


def select_trajectory(rows: Any, evt: gr.SelectData) -> int | None:
    """A clicked row → its trajectory id (the first column)."""
    if evt.row_value:
        return int(evt.row_value[0])
    row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
    values = _table_rows(rows)
    return int(values[row][0]) if values and row is not None and row < len(values) else None


def first_trajectory_id(rows: Any) -> Any:
    """After a search, open the first listed trajectory so the replay is never empty next to results."""
    values = _table_rows(rows)
    return int(values[0][0]) if values and values[0] and str(values[0][0]).isdigit() else gr.skip()


def open_trajectory(client: StudioClient, trajectory_id: Any) -> tuple[str, str]:
    """(replay HTML, group comparison HTML) of one trajectory."""
    try:
        tid = parse_optional_int(trajectory_id, "trajectory id")
        if tid is None:
            return "<p><i>Pick a trajectory in the table to replay it.</i></p>", ""
        traj = client.get_trajectory(tid)
        siblings = [client.get_trajectory(s) for s in traj.sibling_ids[: MAX_GROUP - 1]]
    except (StudioAPIError, ValueError) as exc:
        return f"<p><b>{error_markdown(exc)}</b></p>", ""
    group = (
        render_group([traj, *siblings], highlight_id=traj.id) if siblings else "<p><i>No other group members.</i></p>"
    )
    return render_trajectory(traj), group


def build_trajectories_tab(client: StudioClient) -> TrajectoriesTab:
    """Lay out the tab and wire its events (the Runs tab's step jump is wired in `app.main`)."""
    with gr.Row():
        run_id = gr.Number(label="Run id", precision=0, elem_id="traj-run-id")
        step = gr.Number(label="Step", precision=0, elem_id="traj-step")
        min_reward = gr.Number(label="Min reward")
        max_reward = gr.Number(label="Max reward")
    with gr.Row():
        parse_error = gr.Dropdown(TRI_STATE, value="any", label="Parse error")
        tool_error = gr.Dropdown(TRI_STATE, value="any", label="Tool error")
        truncated = gr.Dropdown(TRI_STATE, value="any", label="Truncated")
        labeled = gr.Dropdown(TRI_STATE, value="any", label="Labeled")
        page = gr.Number(1, label="Page", precision=0, minimum=1)
    search = gr.Button("Search", variant="primary", elem_id="traj-search")
    info = gr.Markdown("Filter by run and step, then click a row to replay it.", elem_id="traj-info")
    table = gr.Dataframe(headers=HEADERS, interactive=False, label="Trajectories", elem_id="traj-table")
    trajectory_id = gr.Number(label="Trajectory id", precision=0, elem_id="traj-id")
    with gr.Tabs():
        with gr.Tab("Replay"):
            replay = gr.HTML(elem_id="traj-replay")
        with gr.Tab("Group comparison"):
            group = gr.HTML(elem_id="traj-group")
    tab = TrajectoriesTab(
        run_id,
        step,
        min_reward,
        max_reward,
        parse_error,
        tool_error,
        truncated,
        labeled,
        page,
        search,
        table,
        info,
        trajectory_id,
        replay,
        group,
    )
    tab.search.click(
        functools.partial(search_trajectories, client),
        tab.filters,
        [tab.table, tab.info],
        api_name="search_trajectories",
    ).then(first_trajectory_id, [tab.table], [tab.trajectory_id], api_visibility="private")
    tab.table.select(select_trajectory, [tab.table], [tab.trajectory_id], api_visibility="private")
    tab.trajectory_id.change(
        functools.partial(open_trajectory, client),
        [tab.trajectory_id],
        [tab.replay, tab.group],
        api_name="open_trajectory",
    )
    return tab
