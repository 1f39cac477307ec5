"""Evaluate tab: one click to score a model or a trained run on HotpotQA / 2Wiki / MuSiQue.

Launches an `eval` run through `POST /evaluations` (a typed `EvaluationCreate`: datasets,
methods, limit, checkpoint); a `gr.Timer` follows it; the results table and bar
chart sit beside the paper's numbers and this studio's earlier evaluations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.render.evaluation import TABLE_HEADERS, evaluation_figure, has_results, report_rows
from app.render.runs import is_finished, run_card
from app.tabs.common import error_markdown, parse_optional_int, poll_job_run, run_choices
from app.tabs.search_scaffold import (
    SearchControls,
    forced_search_turns_field,
    forced_searches_control,
    search_controls,
    search_fields,
)
from backend.schemas.evaluation import EvaluationCreate
from backend.schemas.run import EvaluationPublic, RunPublic

DATASETS = ["hotpotqa", "2wiki", "musique"]
METHODS = ["direct", "naive-rag", "base-tool-call", "agent"]
BASE_MODEL = "smollm2-135m"
HISTORY = 5


@dataclass(frozen=True)
class EvaluateTab:
    """Component handles of the Evaluate tab."""

    datasets: gr.CheckboxGroup
    methods: gr.CheckboxGroup
    source_run: gr.Dropdown
    model: gr.Textbox
    limit: gr.Number
    search: SearchControls
    force_first_search: gr.Checkbox
    answer_on_last_turn: gr.Checkbox
    start: gr.Button
    card: gr.Markdown
    table: gr.Dataframe
    plot: gr.Plot
    run_id: gr.State
    timer: gr.Timer


def with_newest_checkpoint(client: StudioClient, request: dict[str, Any], source_run: int | None) -> str | None:
    """Point `request` at the newest checkpoint of `source_run` (if one is picked); its label, else None."""
    if not source_run:
        return None
    checkpoints = client.list_checkpoints(int(source_run))
    if not checkpoints:
        raise ValueError(f"run #{source_run} has no checkpoint yet; wait for it to save one or pick the base model")
    newest = max(checkpoints, key=lambda c: c.step)
    request.update(checkpoint_run_id=int(source_run), checkpoint_step=newest.step, checkpoint_path=newest.path)
    return f"run #{source_run} step {newest.step}"


def build_eval_request(
    client: StudioClient,
    datasets: list[str],
    methods: list[str],
    source_run: int | None,
    model: str,
    limit: Any,
    retriever: Any = None,
    top_k: Any = None,
    max_passage_chars: Any = None,
    force_first_search: bool = False,
    answer_on_last_turn: bool = False,
    forced_search_turns: Any = None,
) -> EvaluationCreate:
    """The eval run to launch; a trained run contributes its newest checkpoint as the `agent` model.

    The search settings and scaffold (forced first search, answer prefill) apply to every method that searches.
    """
    if not datasets:
        raise ValueError("datasets: tick at least one of hotpotqa, 2wiki, musique")
    if not methods:
        raise ValueError("methods: tick at least one method")
    n = parse_optional_int(limit, "limit")
    if n is not None and n < 1:
        raise ValueError("limit must be at least 1 example per dataset (or empty for all)")
    name_or_path = (model or "").strip() or BASE_MODEL
    request: dict[str, Any] = {
        "model": name_or_path,
        "datasets": list(datasets),
        "methods": list(methods),
        "limit": n,
        "seed": 0,
        **search_fields(retriever, top_k, max_passage_chars),
        "force_first_search": bool(force_first_search),
        "forced_search_turns": forced_search_turns_field(forced_search_turns),
        "answer_on_last_turn": bool(answer_on_last_turn),
    }
    label = with_newest_checkpoint(client, request, source_run) or name_or_path
    name = f"eval {label} · {','.join(methods)} · {','.join(datasets)}"[:200]
    return EvaluationCreate(name=name, **request)


def start_evaluation(
    client: StudioClient,
    datasets: list[str],
    methods: list[str],
    source_run: int | None,
    model: str,
    limit: Any,
    *scaffold: Any,
) -> tuple[Any, ...]:
    """Launch: (run_id, card, timer); `scaffold` = retriever, top-k, passage chars, forced search, prefill,
    forced searches."""
    try:
        request = build_eval_request(client, datasets, methods, source_run, model, limit, *scaffold)
        run = client.create_evaluation(request)
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), error_markdown(exc), gr.Timer(active=False)
    return run.id, run_card(run), gr.Timer(active=True)


def build_env_eval_request(
    client: StudioClient, environment_id: int | None, source_run: int | None, model: str, limit: Any
) -> EvaluationCreate:
    """An eval run on a user environment's held-out split (its current version is pinned by the API)."""
    if not environment_id:
        raise ValueError("environment: pick one of your environments")
    n = parse_optional_int(limit, "limit")
    if n is not None and n < 1:
        raise ValueError("limit must be at least 1 held-out task (or empty for all)")
    name_or_path = (model or "").strip() or BASE_MODEL
    request: dict[str, Any] = {"model": name_or_path, "limit": n, "seed": 0, "environment_id": int(environment_id)}
    label = with_newest_checkpoint(client, request, source_run) or name_or_path
    return EvaluationCreate(name=f"eval {label} · environment #{environment_id} held-out"[:200], **request)


def start_env_evaluation(
    client: StudioClient, environment_id: int | None, source_run: int | None, model: str, limit: Any
) -> tuple[Any, ...]:
    """Launch on an environment: (run_id, card, timer)."""
    try:
        run = client.create_evaluation(build_env_eval_request(client, environment_id, source_run, model, limit))
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), error_markdown(exc), gr.Timer(active=False)
    return run.id, run_card(run), gr.Timer(active=True)


def poll_env_evaluation(client: StudioClient, run_id: int | None) -> tuple[Any, ...]:
    """Timer tick: (card, report, timer)."""
    polled = poll_job_run(client, run_id, run_card)
    if not isinstance(polled, RunPublic):
        return polled
    run = polled
    report = run.result or {}
    card = run_card(run)
    if "correctness" in report:
        card += (
            f"\n\n**Correctness {report['correctness']:.3f}** over {report.get('n')} held-out tasks "
            f"(mean reward {report.get('reward_mean', 0.0):.3f})."
        )
    return card, report, gr.Timer(active=False)


def environment_picker(client: StudioClient) -> dict[str, Any]:
    try:
        envs = client.list_environments()
    except StudioAPIError as exc:
        error_markdown(exc)
        return gr.update()
    return gr.update(choices=[(f"#{e.id} {e.name} (v{e.version})", e.id) for e in envs])


def past_evaluations(client: StudioClient, exclude: int | None = None) -> list[EvaluationPublic]:
    """The newest succeeded eval runs' results (for the comparison)."""
    runs = client.list_runs(kind="eval", status="succeeded", limit=HISTORY).items
    found = [client.get_evaluation(r.id) for r in runs if r.id != exclude]
    return [e for e in found if has_results(e)]


def show_results(client: StudioClient, run_id: int | None) -> tuple[Any, Any]:
    """(table rows, figure) for this run plus earlier evaluations; the empty state says what to do."""
    current = [client.get_evaluation(run_id)] if run_id is not None else []
    shown = [e for e in current if has_results(e)] + past_evaluations(client, exclude=run_id)
    rows = [row for e in shown for row in report_rows(e)]
    if not shown:
        return [], evaluation_figure(current) if current else None
    return rows, evaluation_figure(shown)


def poll_evaluation(client: StudioClient, run_id: int | None) -> tuple[Any, ...]:
    """Timer tick: (card, table, plot, timer); results are fetched once the run finishes."""
    if run_id is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
    try:
        run = client.get_run(int(run_id))
        if not is_finished(run):
            return run_card(run), gr.skip(), gr.skip(), gr.Timer(active=True)
        rows, figure = show_results(client, run.id)
    except StudioAPIError as exc:
        return error_markdown(exc), gr.skip(), gr.skip(), gr.Timer(active=False)
    return run_card(run), rows, figure, gr.Timer(active=False)


def load_history(client: StudioClient) -> tuple[Any, ...]:
    """On page load: the train-run picker and earlier results."""
    try:
        choices = [("Base model (no training)", 0), *run_choices(client, kind="train")]
        rows, figure = show_results(client, None)
    except StudioAPIError as exc:
        return gr.update(), gr.skip(), gr.skip(), error_markdown(exc)
    hint = "" if rows else "No evaluations yet: pick datasets and methods, then press **Evaluate**."
    return gr.update(choices=choices), rows, figure, hint


def build_evaluate_tab(client: StudioClient, *, poll_interval_s: float = 2.0) -> EvaluateTab:
    """Lay out the tab and wire its events (call inside a `gr.Tab`)."""
    gr.Markdown(
        "Score a model on the multi-hop QA benchmarks (dev samples), greedy decoding. The paper's EM "
        "is our **cover-EM** (gold contained in the answer)."
    )
    with gr.Row():
        datasets = gr.CheckboxGroup(DATASETS, value=["hotpotqa"], label="Datasets", elem_id="eval-datasets")
        methods = gr.CheckboxGroup(
            METHODS,
            value=["direct"],
            label="Methods",
            elem_id="eval-methods",
            info="direct: no retrieval · naive-rag: passages in the prompt · "
            "base-tool-call / agent: multi-turn search tool",
        )
    with gr.Row():
        source_run = gr.Dropdown(
            [("Base model (no training)", 0)],
            value=0,
            label="Checkpoint",
            info="A train run's newest checkpoint, or the base model",
            elem_id="eval-source-run",
        )
        model = gr.Textbox(BASE_MODEL, label="Base model")
        limit = gr.Number(10, label="Examples per dataset", precision=0, minimum=1, elem_id="eval-limit")
    with gr.Accordion("Search and scaffold (every method that searches)", open=False):
        search = search_controls("eval")
        with gr.Row():
            force = gr.Checkbox(False, label="Forced first search", elem_id="eval-force-first-search")
            answer_last = gr.Checkbox(False, label="<answer> prefilled on the last turn", elem_id="eval-answer-last")
            forced_searches = forced_searches_control("eval")
    start = gr.Button("Evaluate", variant="primary", elem_id="eval-start")
    card = gr.Markdown(elem_id="eval-card")
    table = gr.Dataframe(
        headers=TABLE_HEADERS, interactive=False, label="Results (this and earlier evaluations)", elem_id="eval-table"
    )
    plot = gr.Plot(label="Cover-EM beside the paper")
    run_id, timer = gr.State(None), gr.Timer(poll_interval_s, active=False)
    tab = EvaluateTab(
        datasets, methods, source_run, model, limit, search, force, answer_last, start, card, table, plot, run_id, timer
    )
    inputs = [
        *[tab.datasets, tab.methods, tab.source_run, tab.model, tab.limit, *search.inputs],
        *[force, answer_last, forced_searches],
    ]
    tab.start.click(
        functools.partial(start_evaluation, client),
        inputs,
        [tab.run_id, tab.card, tab.timer],
        api_name="start_evaluation",
    )
    tab.timer.tick(
        functools.partial(poll_evaluation, client),
        [tab.run_id],
        [tab.card, tab.table, tab.plot, tab.timer],
        api_visibility="private",
    )
    _build_env_section(client, source_run, model, limit, poll_interval_s)
    return tab


def _build_env_section(client: StudioClient, source_run: Any, model: Any, limit: Any, poll_interval_s: float) -> None:
    gr.Markdown(
        "#### On your environment's held-out split\nThe same checkpoint and base model, one greedy episode "
        "per held-out task of the environment's current version (user tools run sandboxed)."
    )
    with gr.Row():
        environment = gr.Dropdown([], label="Environment", scale=3, elem_id="eval-env-picker")
        refresh = gr.Button("Refresh", scale=1, elem_id="eval-env-refresh")
        start = gr.Button("Evaluate on the environment", variant="primary", scale=2, elem_id="eval-env-start")
    card = gr.Markdown(elem_id="eval-env-card")
    report = gr.JSON(label="Held-out report", elem_id="eval-env-report")
    run_id, timer = gr.State(None), gr.Timer(poll_interval_s, active=False)
    refresh.click(functools.partial(environment_picker, client), None, [environment], api_visibility="private")
    start.click(
        functools.partial(start_env_evaluation, client),
        [environment, source_run, model, limit],
        [run_id, card, timer],
        api_name="start_env_evaluation",
    )
    timer.tick(
        functools.partial(poll_env_evaluation, client), [run_id], [card, report, timer], api_visibility="private"
    )
