"""Label tab: score mode (1 good, 0 bad, n skip, s submit), pairwise mode (a/b/t/n) and reward models.

The score queue (`GET /runs/{id}/label-queue`) puts mixed-reward groups first. Each submit
posts a score label (optional per-step scores, note) and, when step marks were typed
(`+` good, `-` bad, `.` unmarked, one per assistant turn), a step label; then shows the next.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.render.trajectory import assistant_turn_count, render_trajectory
from app.tabs.common import error_markdown, parse_optional_int
from app.tabs.pairwise import build_pairwise_panel, build_reward_models_panel
from backend.schemas.trajectory import LabelCreate, StepMark

QUEUE_SIZE = 50
KEYBOARD_JS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target; const tag = (t && t.tagName || '').toLowerCase();
  if (tag === 'input' || tag === 'textarea' || (t && t.isContentEditable)) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const panels = {
    'label-panel': {'1': 'label-good', '0': 'label-bad', 'n': 'label-skip', 's': 'label-submit'},
    'pair-panel': {'a': 'pair-a', 'b': 'pair-b', 't': 'pair-tie', 'n': 'pair-skip'},
  };
  for (const [panelId, ids] of Object.entries(panels)) {
    const panel = document.getElementById(panelId);
    if (!panel || panel.offsetParent === null) continue;
    const button = ids[e.key] && document.getElementById(ids[e.key]);
    if (button) { e.preventDefault(); button.click(); return; }
  }
});
</script>
"""
"""Injected into the page head: keys click the visible Label panel's buttons (score: 1/0/n/s, pairwise: a/b/t/n)."""


@dataclass
class LabelSession:
    """Per-user labeling progress (kept in `gr.State`)."""

    run_id: int | None = None
    queue: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    done: int = 0

    @property
    def current(self) -> int | None:
        return self.queue[0] if self.queue else None


@dataclass(frozen=True)
class LabelTab:
    """Component handles of the Label tab."""

    run_id: gr.Number
    load: gr.Button
    progress: gr.Markdown
    view: gr.HTML
    score: gr.Slider
    step_scores: gr.Textbox
    step_marks: gr.Textbox
    note: gr.Textbox
    labeler: gr.Textbox
    good: gr.Button
    bad: gr.Button
    skip: gr.Button
    submit: gr.Button
    session: gr.State


def progress_text(session: LabelSession) -> str:
    if session.run_id is None:
        return "Enter a run id and load its queue."
    left = len(session.queue)
    skipped = len(session.skipped)
    return f"Run #{session.run_id}: **{session.done} labeled** this session · {left} in the queue · {skipped} skipped"


def _show(client: StudioClient, session: LabelSession) -> tuple[Any, ...]:
    """(session, progress, view, step-scores placeholder) for the current item, refilling the queue if empty."""
    if not session.queue and session.run_id is not None:
        items = client.label_queue(session.run_id, limit=QUEUE_SIZE)
        session.queue = [t.id for t in items if t.id not in session.skipped]
    if session.current is None:
        view = "<p>🎉 Nothing left to label in this run. Launch more steps or pick another run.</p>"
        return session, progress_text(session), view, gr.update(placeholder="")
    traj = client.get_trajectory(session.current)
    turns = assistant_turn_count(traj)
    hint = f"{turns} comma-separated scores, one per assistant turn (optional)"
    return session, progress_text(session), render_trajectory(traj), gr.update(placeholder=hint, value="")


def load_queue(client: StudioClient, run_id: Any) -> tuple[Any, ...]:
    try:
        rid = parse_optional_int(run_id, "run id")
        if rid is None:
            raise ValueError("enter the id of a run that has trajectories (see the Runs tab)")
        return _show(client, LabelSession(run_id=rid))
    except (StudioAPIError, ValueError) as exc:
        return LabelSession(), error_markdown(exc), gr.skip(), gr.skip()


def parse_step_scores(text: str) -> list[float]:
    """'1, 0.5,0' → [1.0, 0.5, 0.0]; each must lie in [-1, 1]."""
    scores = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"step scores must be numbers separated by commas, got {part!r}") from None
        if not -1.0 <= value <= 1.0:
            raise ValueError(f"each step score must lie in [-1, 1], got {value}")
        scores.append(value)
    return scores


def parse_step_marks(text: str) -> list[StepMark]:
    """'+-.' → turn 0 good, turn 1 bad, turn 2 unmarked (spaces ignored)."""
    marks = []
    for turn, char in enumerate((text or "").replace(" ", "")):
        if char not in "+-.":
            raise ValueError(f"step marks are one of + (good), - (bad), . (unmarked) per assistant turn; got {char!r}")
        if char != ".":
            marks.append(StepMark(turn=turn, good=char == "+"))
    return marks


def submit_label(
    client: StudioClient,
    session: LabelSession,
    score: float,
    step_scores: str,
    note: str,
    labeler: str,
    step_marks: str = "",
) -> tuple[Any, ...]:
    """POST the label (and step marks) for the current item and show the next: (session, progress, view, …, note)."""
    if session.current is None:
        return session, error_markdown(ValueError("load a queue first")), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    try:
        name = (labeler or "").strip() or "anonymous"
        label = LabelCreate(
            score=float(score), step_scores=parse_step_scores(step_scores), note=note or "", labeler=name
        )
        marks = parse_step_marks(step_marks)
        client.create_label(session.current, label)
        if marks:
            client.create_label(session.current, LabelCreate(kind="step", step_marks=marks, labeler=name))
        session.queue.pop(0)
        session.done += 1
        return (*_show(client, session), "", "")
    except (StudioAPIError, ValueError) as exc:
        return session, error_markdown(exc), gr.skip(), gr.skip(), gr.skip(), gr.skip()


def submit_quick(
    client: StudioClient,
    value: float,
    session: LabelSession,
    step_scores: str,
    note: str,
    labeler: str,
    step_marks: str = "",
) -> tuple[Any, ...]:
    """The 👍/👎 buttons: submit with a fixed score."""
    return submit_label(client, session, value, step_scores, note, labeler, step_marks)


def skip_item(client: StudioClient, session: LabelSession) -> tuple[Any, ...]:
    if session.current is None:
        return session, progress_text(session), gr.skip(), gr.skip()
    session.skipped.append(session.queue.pop(0))
    try:
        return _show(client, session)
    except StudioAPIError as exc:
        return session, error_markdown(exc), gr.skip(), gr.skip()


def build_labeling_tab(client: StudioClient) -> LabelTab:
    """Lay out the tab (score, pairwise and reward-model panels) and wire its events (call inside a `gr.Tab`)."""
    with gr.Tabs():
        with gr.Tab("Score", id="label-score"):
            tab = build_score_panel(client)
        with gr.Tab("Pairwise", id="label-pairwise"):
            build_pairwise_panel(client)
        with gr.Tab("Reward models", id="label-reward-models"):
            build_reward_models_panel(client)
    return tab


def build_score_panel(client: StudioClient) -> LabelTab:
    """The score mode: one trajectory, a score, optional per-step scores and step marks."""
    with gr.Column(elem_id="label-panel"):
        gr.Markdown(
            "Score trajectories by hand. Keys: **1** good (score 1) · **0** bad (score 0) · **n** skip · "
            "**s** submit with the slider's score (when no text box has focus)."
        )
        with gr.Row():
            run_id = gr.Number(label="Run id", precision=0, elem_id="label-run-id")
            load = gr.Button("Load labeling queue", variant="primary", elem_id="label-load")
        progress = gr.Markdown(elem_id="label-progress")
        with gr.Row():
            with gr.Column(scale=3):
                view = gr.HTML(elem_id="label-view")
            with gr.Column(scale=1):
                score = gr.Slider(-1, 1, 1, step=0.25, label="Score for the whole trajectory")
                step_scores = gr.Textbox(label="Per-step scores")
                step_marks = gr.Textbox(
                    label="Step marks (+ good, - bad, . unmarked; one per assistant turn)",
                    placeholder="+-",
                    elem_id="label-step-marks",
                )
                note = gr.Textbox(label="Note", lines=3)
                labeler = gr.Textbox(
                    "anonymous", label="Your name", info="When signed in, your account name is used instead."
                )
                submit = gr.Button("Submit & next (s)", variant="primary", elem_id="label-submit")
                with gr.Row():
                    good = gr.Button("👍 Good (1)", elem_id="label-good")
                    bad = gr.Button("👎 Bad (0)", elem_id="label-bad")
                skip = gr.Button("Skip (n)", elem_id="label-skip")
    session = gr.State(LabelSession())
    tab = LabelTab(
        run_id, load, progress, view, score, step_scores, step_marks, note, labeler, good, bad, skip, submit, session
    )
    shown = [tab.session, tab.progress, tab.view, tab.step_scores]
    tab.load.click(functools.partial(load_queue, client), [tab.run_id], shown, api_name="load_label_queue")
    form = [tab.session, tab.step_scores, tab.note, tab.labeler, tab.step_marks]
    outputs = [*shown, tab.note, tab.step_marks]
    tab.submit.click(
        functools.partial(submit_label, client), [tab.session, tab.score, *form[1:]], outputs, api_name="submit_label"
    )
    tab.good.click(functools.partial(submit_quick, client, 1.0), form, outputs, api_visibility="private")
    tab.bad.click(functools.partial(submit_quick, client, 0.0), form, outputs, api_visibility="private")
    tab.skip.click(functools.partial(skip_item, client), [tab.session], shown, api_visibility="private")
    return tab
