"""Label tab, pairwise mode and reward models: A/B/tie on two group members by keyboard, then train on the labels.

Keys (when no text box has focus): **a** A better · **b** B better · **t** tie · **n** skip. The queue
(`GET /runs/{id}/pair-queue`) puts mixed-reward pairs first, then pairs the current reward model gets
wrong or is unsure about. Progress and Cohen's kappa come from `GET /runs/{id}/labels/stats`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.render.compare import render_pair
from app.render.trajectory import fmt_num
from app.tabs.common import error_markdown, parse_optional_int
from backend.schemas.reward_model import RewardModelCreate, RewardModelPublic
from backend.schemas.trajectory import LabelCreate, LabelStats

PAIR_QUEUE_SIZE = 50
RM_HEADERS = [
    "id",
    "name",
    "status",
    "base model",
    "runs",
    "held-out accuracy",
    "ECE",
    "pairs (train/held-out)",
    "use as",
]


@dataclass
class PairSession:
    """Per-user pairwise progress (kept in `gr.State`)."""

    run_id: int | None = None
    queue: list[tuple[int, int, str]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)
    done: int = 0

    @property
    def current(self) -> tuple[int, int, str] | None:
        return self.queue[0] if self.queue else None


@dataclass(frozen=True)
class PairTab:
    run_id: gr.Number
    load: gr.Button
    progress: gr.Markdown
    view: gr.HTML
    note: gr.Textbox
    labeler: gr.Textbox
    a: gr.Button
    b: gr.Button
    tie: gr.Button
    skip: gr.Button
    session: gr.State


def stats_text(stats: LabelStats) -> str:
    """Progress, labels per labeler and agreement as one Markdown line."""
    by = ", ".join(f"{name} {count}" for name, count in sorted(stats.labels_by_labeler.items())) or "nobody yet"
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(stats.labels_by_kind.items())) or "no labels"
    kappas = []
    for name, k in (("pairwise", stats.pairwise_kappa), ("step", stats.step_kappa)):
        value = f"κ {fmt_num(k.kappa, 2)} on {k.items} shared item(s)" if k.items else "no item labeled twice"
        kappas.append(f"{name}: {value}")
    return (
        f"{stats.labeled_trajectories}/{stats.trajectories} trajectories labeled · {kinds} · by {by} · "
        f"agreement {'; '.join(kappas)}"
    )


def _show(client: StudioClient, session: PairSession) -> tuple[Any, ...]:
    """(session, progress, view) for the current pair, refilling the queue when empty."""
    if not session.queue and session.run_id is not None:
        pairs = client.pair_queue(session.run_id, limit=PAIR_QUEUE_SIZE)
        session.queue = [(p.a.id, p.b.id, p.reason) for p in pairs if (p.a.id, p.b.id) not in session.skipped]
    progress = f"Run #{session.run_id}: **{session.done} pairs** this session · {len(session.queue)} in the queue"
    if session.run_id is not None:
        progress += " · " + stats_text(client.label_stats(session.run_id))
    if session.current is None:
        return session, progress, "<p>🎉 No unlabeled pairs left in this run.</p>"
    a_id, b_id, reason = session.current
    view = f"<p><i>why this pair: {reason}</i></p>" + render_pair(
        client.get_trajectory(a_id), client.get_trajectory(b_id)
    )
    return session, progress, view


def load_pairs(client: StudioClient, run_id: Any) -> tuple[Any, ...]:
    try:
        rid = parse_optional_int(run_id, "run id")
        if rid is None:
            raise ValueError("enter the id of a run that has trajectories (see the Runs tab)")
        return _show(client, PairSession(run_id=rid))
    except (StudioAPIError, ValueError) as exc:
        return PairSession(), error_markdown(exc), gr.skip()


def choose(client: StudioClient, choice: str, session: PairSession, note: str, labeler: str) -> tuple[Any, ...]:
    """Post 'a' / 'b' / 'tie' for the current pair and show the next: (session, progress, view, note)."""
    if session.current is None:
        return session, error_markdown(ValueError("load a pair queue first")), gr.skip(), gr.skip()
    a_id, b_id, _ = session.current
    try:
        label = LabelCreate(
            kind="pairwise",
            other_trajectory_id=b_id,
            choice=choice,
            note=note or "",  # type: ignore[arg-type]
            labeler=(labeler or "").strip() or "anonymous",
        )
        client.create_label(a_id, label)
        session.queue.pop(0)
        session.done += 1
        return (*_show(client, session), "")
    except (StudioAPIError, ValueError) as exc:
        return session, error_markdown(exc), gr.skip(), gr.skip()


def skip_pair(client: StudioClient, session: PairSession) -> tuple[Any, ...]:
    if session.current is None:
        return session, gr.skip(), gr.skip()
    a_id, b_id, _ = session.queue.pop(0)
    session.skipped.append((a_id, b_id))
    try:
        return _show(client, session)
    except StudioAPIError as exc:
        return session, error_markdown(exc), gr.skip()


def build_pairwise_panel(client: StudioClient) -> PairTab:
    """The pairwise mode (call inside a `gr.Tab` of the Label tab)."""
    with gr.Column(elem_id="pair-panel"):
        gr.Markdown(
            "Compare two samples of the same task. Keys: **a** A better · **b** B better · **t** tie · "
            "**n** skip (when no text box has focus). Rewards are hidden so they don't sway you."
        )
        with gr.Row():
            run_id = gr.Number(label="Run id", precision=0, elem_id="pair-run-id")
            load = gr.Button("Load pairs", variant="primary", elem_id="pair-load")
        progress = gr.Markdown(elem_id="pair-progress")
        view = gr.HTML(elem_id="pair-view")
        with gr.Row():
            a = gr.Button("A better (a)", elem_id="pair-a")
            tie = gr.Button("Tie (t)", elem_id="pair-tie")
            b = gr.Button("B better (b)", elem_id="pair-b")
            skip = gr.Button("Skip (n)", elem_id="pair-skip")
        with gr.Row():
            note = gr.Textbox(label="Note (why)", lines=1)
            labeler = gr.Textbox("anonymous", label="Your name")  # TODO(#14): from the signed-in account
    tab = PairTab(run_id, load, progress, view, note, labeler, a, b, tie, skip, gr.State(PairSession()))
    shown = [tab.session, tab.progress, tab.view]
    tab.load.click(functools.partial(load_pairs, client), [tab.run_id], shown, api_name="load_pair_queue")
    for button, choice in ((tab.a, "a"), (tab.b, "b"), (tab.tie, "tie")):
        button.click(
            functools.partial(choose, client, choice),
            [tab.session, tab.note, tab.labeler],
            [*shown, tab.note],
            api_name=f"choose_{choice}",
        )
    tab.skip.click(functools.partial(skip_pair, client), [tab.session], shown, api_visibility="private")
    return tab


# ------------------------------------------------------------------ reward models


def parse_run_ids(text: str) -> list[int]:
    """'3, 5' → [3, 5]."""
    ids = []
    for part in (p.strip() for p in (text or "").replace(" ", ",").split(",")):
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(f"run ids must be whole numbers separated by commas, got {part!r}")
        ids.append(int(part))
    if not ids:
        raise ValueError("enter the ids of the runs whose labels to train on, e.g. 3, 5")
    return ids


def rm_rows(models: list[RewardModelPublic]) -> list[list[Any]]:
    return [
        [
            m.id,
            m.name,
            m.status if not m.error else f"{m.status}: {m.error}",
            m.base_model,
            ", ".join(str(i) for i in m.label_run_ids),
            fmt_num(m.heldout_accuracy, 3),
            fmt_num(m.heldout_ece, 3),
            f"{m.train_pairs or '–'}/{m.heldout_pairs or '–'}",
            f"{'step_reward_model' if m.kind == 'step' else 'reward_model'}:{m.id}",
        ]
        for m in models
    ]


def refresh_reward_models(client: StudioClient) -> tuple[Any, str]:
    try:
        models = client.list_reward_models()
    except StudioAPIError as exc:
        return gr.skip(), error_markdown(exc)
    hint = (
        "Use one in an environment's rubric (Environments tab) or a run: "
        "`task.reward_models = [{id = <id>, weight = 1.0}]` (a step scorer: `step = true`, process rewards)."
        if models
        else "No reward models yet."
    )
    return rm_rows(models), hint


def train_reward_model(
    client: StudioClient, run_ids: str, base_model: str, epochs: Any, kind: str = "trajectory"
) -> tuple[Any, str]:
    """POST /reward-models; the table refreshes with the queued model (or the error says what is missing).

    `kind` 'step' trains a step scorer on the step marks (a process reward) instead of a trajectory model.
    """
    try:
        config = {"epochs": int(epochs)} if epochs else {}
        rm_in = RewardModelCreate(
            label_run_ids=parse_run_ids(run_ids),
            base_model=(base_model or "").strip() or "smollm2-135m",
            config=config,
            kind="step" if kind == "step" else "trajectory",
        )
        rm = client.create_reward_model(rm_in)
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), error_markdown(exc)
    table, _ = refresh_reward_models(client)
    return table, f"Reward model #{rm.id} queued (rm_train on the gpu queue); refresh to see its accuracy."


def build_reward_models_panel(client: StudioClient) -> None:
    gr.Markdown(
        "Train a reward model (Bradley–Terry, TRL `RewardTrainer`) on the labels of one or more runs. "
        "It scores question + tool queries + answer, so any causal LM works as a base."
    )
    with gr.Row():
        run_ids = gr.Textbox(label="Runs whose labels to use", placeholder="3, 5", elem_id="rm-run-ids")
        base_model = gr.Textbox("smollm2-135m", label="Base model", elem_id="rm-base-model")
        epochs = gr.Number(3, label="Epochs", precision=0)
        kind = gr.Dropdown(
            [("Trajectory (pairwise + score labels)", "trajectory"), ("Step scorer (good/bad step marks)", "step")],
            value="trajectory",
            label="Scores",
            elem_id="rm-kind",
        )
        train = gr.Button("Train reward model", variant="primary", elem_id="rm-train")
    status = gr.Markdown(elem_id="rm-status")
    refresh = gr.Button("Refresh", elem_id="rm-refresh")
    table = gr.Dataframe(headers=RM_HEADERS, interactive=False, label="Reward models", elem_id="rm-table")
    train.click(
        functools.partial(train_reward_model, client),
        [run_ids, base_model, epochs, kind],
        [table, status],
        api_name="train_reward_model",
    )
    refresh.click(
        functools.partial(refresh_reward_models, client), None, [table, status], api_name="list_reward_models"
    )
