"""Evaluate tab, compare section: several checkpoints and baselines → one click → one table and chart.

`POST /comparisons` launches one eval run per checkpoint and one for the baselines, all over the same
datasets and seeded examples with the same scaffold (forced first search); a `gr.Timer` follows them.
A stored comparison reopens from the list; two of its rows' predictions sit side by side, and a
clicked trajectory id opens in the Trajectories tab's replay (wired in `app.main`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from app.client import StudioAPIError, StudioClient
from app.render.comparison import (
    comparison_figure,
    example_labels,
    side_by_side_headers,
    side_by_side_rows,
    trajectory_columns,
)
from app.tabs.common import error_markdown, parse_optional_int
from app.tabs.search_scaffold import (
    SearchControls,
    forced_search_turns_field,
    forced_searches_control,
    search_controls,
    search_fields,
)
from backend.schemas.comparison import ComparisonCheckpoint, ComparisonCreate, ComparisonPublic

BASELINES = ["direct", "naive-rag", "base-tool-call"]
DATASETS = ["hotpotqa", "2wiki", "musique"]
METRICS = [("cover-EM (paper's EM)", "cover_em"), ("EM", "em"), ("F1", "f1")]
TRAIN_RUNS = 20
"""Newest train runs whose checkpoints are offered."""
FINISHED = ("succeeded", "failed")
BASE_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class CompareSection:
    """Component handles of the compare section."""

    checkpoints: gr.CheckboxGroup
    baselines: gr.CheckboxGroup
    datasets: gr.CheckboxGroup
    limit: gr.Number
    model: gr.Textbox
    force_first_search: gr.Checkbox
    answer_on_last_turn: gr.Checkbox
    search: SearchControls
    forced_searches: gr.Number
    start: gr.Button
    card: gr.Markdown
    table: gr.Dataframe
    metric: gr.Radio
    plot: gr.Plot
    past: gr.Dropdown
    label_a: gr.Dropdown
    label_b: gr.Dropdown
    side: gr.Dataframe
    side_info: gr.Markdown
    trajectory_id: gr.Number
    replay: gr.Button
    comparison_id: gr.State
    timer: gr.Timer


def checkpoint_choices(client: StudioClient) -> list[tuple[str, str]]:
    """`(label, "run_id:step")` for every checkpoint of the newest train runs."""
    choices = []
    for run in client.list_runs(kind="train", limit=TRAIN_RUNS).items:
        for checkpoint in sorted(client.list_checkpoints(run.id), key=lambda c: -c.step):
            choices.append((f"run #{run.id} {run.name} · step {checkpoint.step}", f"{run.id}:{checkpoint.step}"))
    return choices


def past_choices(client: StudioClient) -> list[tuple[str, int]]:
    return [(f"#{c.id} {c.name} ({c.status})", c.id) for c in client.list_comparisons()]


def build_comparison_request(
    checkpoints: list[str],
    baselines: list[str],
    datasets: list[str],
    limit: Any,
    model: str,
    force_first_search: bool,
    answer_on_last_turn: bool = False,
    retriever: Any = None,
    top_k: Any = None,
    max_passage_chars: Any = None,
    forced_search_turns: Any = None,
) -> ComparisonCreate:
    """The comparison to launch; every row shares datasets, examples and scaffold."""
    if not checkpoints and not baselines:
        raise ValueError("tick at least one checkpoint or baseline to compare")
    if not datasets:
        raise ValueError("datasets: tick at least one of hotpotqa, 2wiki, musique")
    n = parse_optional_int(limit, "examples per dataset")
    if n is not None and n < 1:
        raise ValueError("examples per dataset must be at least 1 (or empty for all)")
    picked = []
    for value in checkpoints:
        run_id, _, step = str(value).partition(":")
        picked.append(ComparisonCheckpoint(run_id=int(run_id), step=int(step) if step else None))
    return ComparisonCreate(
        checkpoints=picked,
        baselines=list(baselines),
        datasets=list(datasets),
        limit=n,
        model=(model or "").strip() or BASE_MODEL,
        force_first_search=bool(force_first_search),
        forced_search_turns=forced_search_turns_field(forced_search_turns),
        answer_on_last_turn=bool(answer_on_last_turn),
        **search_fields(retriever, top_k, max_passage_chars),
    )


def comparison_card(comparison: ComparisonPublic) -> str:
    members = " · ".join(f"{m.label}: eval run #{m.run_id} {m.status}" for m in comparison.members)
    errors = [f"{m.label}: {m.error}" for m in comparison.members if m.error and m.status == "failed"]
    note = "\n\n" + "\n".join(f"⚠️ {e}" for e in errors) if errors else ""
    return f"**Comparison #{comparison.id}** · {comparison.status} · {members}{note}"


def _table(comparison: ComparisonPublic) -> Any:
    if not comparison.table:
        return pd.DataFrame()
    return pd.DataFrame(comparison.table[1:], columns=comparison.table[0])


def _label_pickers(comparison: ComparisonPublic) -> tuple[Any, Any]:
    labels = example_labels(comparison)
    first = labels[0] if labels else None
    second = labels[1] if len(labels) > 1 else first
    return gr.update(choices=labels, value=first), gr.update(choices=labels, value=second)


def show_comparison(client: StudioClient, comparison_id: Any, metric: str) -> tuple[Any, ...]:
    """(card, table, plot, label A, label B, timer): the timer runs until every member has finished."""
    if comparison_id is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
    try:
        comparison = client.get_comparison(int(comparison_id))
    except StudioAPIError as exc:
        return error_markdown(exc), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
    finished = comparison.status in FINISHED
    a, b = _label_pickers(comparison) if finished else (gr.skip(), gr.skip())
    figure = comparison_figure(comparison, metric=metric or "cover_em") if comparison.rows else None
    return comparison_card(comparison), _table(comparison), figure, a, b, gr.Timer(active=not finished)


def start_comparison(
    client: StudioClient,
    checkpoints: list[str],
    baselines: list[str],
    datasets: list[str],
    limit: Any,
    model: str,
    force: bool,
    answer_last: bool = False,
    *search: Any,
) -> tuple[Any, ...]:
    """Launch: (comparison id, card, timer); `search` = retriever, top-k, passage chars, forced searches."""
    try:
        request = build_comparison_request(checkpoints, baselines, datasets, limit, model, force, answer_last, *search)
        comparison = client.create_comparison(request)
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), error_markdown(exc), gr.Timer(active=False)
    return comparison.id, comparison_card(comparison), gr.Timer(active=True)


def open_past(comparison_id: Any) -> tuple[Any, Any]:
    """A picked stored comparison becomes the shown one: (comparison id, timer on for one tick)."""
    if not comparison_id:
        return gr.skip(), gr.Timer(active=False)
    return int(comparison_id), gr.Timer(active=True)


def side_by_side(client: StudioClient, comparison_id: Any, label_a: str | None, label_b: str | None) -> tuple[Any, str]:
    """(table, info): the two rows' predictions per example, with their trajectory ids."""
    if comparison_id is None or not label_a or not label_b:
        return gr.skip(), "Pick two rows of a finished comparison."
    if label_a == label_b:
        return gr.skip(), "Pick two different rows to put side by side."
    try:
        comparison = client.get_comparison(int(comparison_id))
    except StudioAPIError as exc:
        return gr.skip(), error_markdown(exc)
    rows = side_by_side_rows(comparison.examples, label_a, label_b)
    table = pd.DataFrame(rows, columns=side_by_side_headers(label_a, label_b))
    return table, f"{len(rows)} examples · click a trajectory id, then **Replay** to open it in Trajectories"


def pick_trajectory(label_a: str | None, label_b: str | None, evt: gr.SelectData) -> Any:
    """A clicked trajectory-id cell → that id (other cells leave the id as it is)."""
    if not label_a or not label_b or not isinstance(evt.index, list | tuple):
        return gr.skip()
    column, value = evt.index[1], str(evt.value)
    return int(value) if column in trajectory_columns(label_a, label_b) and value.isdigit() else gr.skip()


def refresh_compare(client: StudioClient) -> tuple[Any, Any]:
    """(checkpoint choices, stored comparisons)."""
    try:
        return gr.update(choices=checkpoint_choices(client)), gr.update(choices=past_choices(client))
    except StudioAPIError as exc:
        error_markdown(exc)
        return gr.update(), gr.update()


def build_compare_section(client: StudioClient, *, poll_interval_s: float = 2.0) -> CompareSection:
    """Lay out the section (call inside the Evaluate tab) and wire its events."""
    gr.Markdown(
        "#### Compare runs\nCheckpoints and baselines over the same examples, the same prompt and "
        "forced first search; the paper's Table 3 beside them."
    )
    with gr.Row():
        checkpoints = gr.CheckboxGroup([], label="Checkpoints", elem_id="cmp-checkpoints", scale=3)
        baselines = gr.CheckboxGroup(
            BASELINES, value=["naive-rag", "base-tool-call"], label="Baselines", elem_id="cmp-baselines", scale=2
        )
    with gr.Row():
        datasets = gr.CheckboxGroup(DATASETS, value=DATASETS, label="Datasets", elem_id="cmp-datasets")
        limit = gr.Number(50, label="Examples per dataset", precision=0, minimum=1, elem_id="cmp-limit")
        model = gr.Textbox(BASE_MODEL, label="Base model (baselines)", elem_id="cmp-model")
        force = gr.Checkbox(True, label="Forced first search (every row)")
        answer_last = gr.Checkbox(False, label="<answer> prefilled on the last turn (every row)")
        refresh = gr.Button("Refresh lists", scale=0, elem_id="cmp-refresh")
    with gr.Accordion("Search (every row)", open=False):
        search = search_controls("cmp")
        forced_searches = forced_searches_control("cmp")
    start = gr.Button("Compare", variant="primary", elem_id="cmp-start")
    with gr.Row():
        past = gr.Dropdown([], label="Stored comparisons", elem_id="cmp-past", scale=3)
        metric = gr.Radio(METRICS, value="cover_em", label="Chart metric", scale=2)
    card = gr.Markdown(elem_id="cmp-card")
    table = gr.Dataframe(interactive=False, label="Comparison", elem_id="cmp-table")
    plot = gr.Plot(label="Grouped by dataset", elem_id="cmp-plot")
    with gr.Row():
        label_a = gr.Dropdown([], label="Row A", elem_id="cmp-a")
        label_b = gr.Dropdown([], label="Row B", elem_id="cmp-b")
    side_info = gr.Markdown(elem_id="cmp-side-info")
    side = gr.Dataframe(interactive=False, label="Side by side", elem_id="cmp-side", wrap=True)
    with gr.Row():
        trajectory_id = gr.Number(None, label="Trajectory id", precision=0, elem_id="cmp-traj-id")
        replay = gr.Button("Replay in Trajectories", elem_id="cmp-replay")
    comparison_id, timer = gr.State(None), gr.Timer(poll_interval_s, active=False)
    section = CompareSection(
        checkpoints,
        baselines,
        datasets,
        limit,
        model,
        force,
        answer_last,
        search,
        forced_searches,
        start,
        card,
        table,
        metric,
        plot,
        past,
        label_a,
        label_b,
        side,
        side_info,
        trajectory_id,
        replay,
        comparison_id,
        timer,
    )
    _wire(client, section, refresh)
    return section


def _wire(client: StudioClient, s: CompareSection, refresh: gr.Button) -> None:
    shown = [s.card, s.table, s.plot, s.label_a, s.label_b, s.timer]
    show = functools.partial(show_comparison, client)
    pair = functools.partial(side_by_side, client)
    s.start.click(
        functools.partial(start_comparison, client),
        [
            s.checkpoints,
            s.baselines,
            s.datasets,
            s.limit,
            s.model,
            s.force_first_search,
            s.answer_on_last_turn,
            *s.search.inputs,
            s.forced_searches,
        ],
        [s.comparison_id, s.card, s.timer],
        api_name="start_comparison",
    )
    s.timer.tick(show, [s.comparison_id, s.metric], shown, api_visibility="private")
    s.past.input(open_past, [s.past], [s.comparison_id, s.timer], api_visibility="private")
    s.metric.change(show, [s.comparison_id, s.metric], shown, api_visibility="private")
    refresh.click(functools.partial(refresh_compare, client), None, [s.checkpoints, s.past], api_visibility="private")
    for picker in (s.label_a, s.label_b):
        picker.change(pair, [s.comparison_id, s.label_a, s.label_b], [s.side, s.side_info], api_visibility="private")
    s.side.select(pick_trajectory, [s.label_a, s.label_b], [s.trajectory_id], api_visibility="private")
