"""Trajectory → HTML: turn-by-turn blocks, pretty tool calls, tokens coloured by loss mask.

Pure formatting over `backend.schemas` (no gradio, no httpx). `data` is
`Trajectory.to_dict()`; the optional `token_texts` list (one decoded piece per
token) is used when the worker stores it, else tokens show as `#id`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from app.render.runs import environment_label
from backend.schemas.trajectory import LabelPublic, TrajectoryPublic

MAX_TOKENS_SHOWN = 4000
"""Longer sequences are cut in the token view (the turn view always shows everything)."""

TRAJECTORY_CSS = """
<style>
.as-traj{font-family:ui-sans-serif,system-ui;font-size:14px;line-height:1.45}
.as-traj .as-head{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px}
.as-traj .as-chip{padding:2px 8px;border-radius:10px;background:#eef2f7;color:#1f2937;font-size:12px}
.as-traj .as-chip.bad{background:#fde2e2;color:#8a1c1c}
.as-traj .as-chip.good{background:#dcf5e3;color:#14532d}
.as-traj .as-turn{border-left:4px solid #cbd5e1;margin:6px 0;padding:6px 10px;border-radius:4px;background:#f8fafc}
.as-traj .as-turn.role-system{border-color:#94a3b8}
.as-traj .as-turn.role-user{border-color:#3b82f6;background:#eff6ff}
.as-traj .as-turn.role-assistant{border-color:#16a34a;background:#f0fdf4}
.as-traj .as-turn.role-tool{border-color:#f59e0b;background:#fffbeb}
.as-traj .as-turn.tool-error{border-color:#dc2626;background:#fef2f2}
.as-traj .as-role{font-weight:600;font-size:12px;text-transform:uppercase;color:#475569}
.as-traj pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:13px;color:#111827}
.as-traj .as-toolcall{background:#1e293b;color:#e2e8f0;border-radius:4px;padding:6px}
.as-traj .as-err{color:#b91c1c;font-weight:600}
.as-traj .as-tokens{font-family:ui-monospace,monospace;font-size:12px;line-height:1.9}
.as-traj .tok{padding:1px 0;border-radius:2px;white-space:pre-wrap;color:#111827}
.as-traj .tok.mask-0{background:#e5e7eb;color:#6b7280}
.as-traj .tok.mask-1{background:#bbf7d0}
.as-traj .tok.mask-1.lowp{background:#fecaca}
.as-traj table.as-breakdown td{padding:1px 8px}
</style>
"""

LOW_LOGPROB = -2.5
"""Sampled tokens below this logprob are tinted red (unlikely choices)."""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt_num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def tool_call_json(call: Mapping[str, Any]) -> str:
    """A tool call as indented JSON (`name` and `arguments` only)."""
    return json.dumps({"name": call.get("name"), "arguments": call.get("arguments", {})}, indent=2, ensure_ascii=False)


def _chip(text: str, tone: str = "") -> str:
    return f'<span class="as-chip {tone}">{esc(text)}</span>'


def render_header(traj: TrajectoryPublic) -> str:
    """Reward, finish reason, flags and the label state as chips."""
    chips = [
        _chip(f"trajectory #{traj.id}"),
        _chip(f"run {traj.run_id} · step {traj.step}"),
        *([_chip(env)] if (env := environment_label(traj.environment_name, traj.environment_version)) else []),
        _chip(f"group {traj.group_id}"),
        _chip(f"reward {fmt_num(traj.reward)}", "good" if traj.reward > 0 else ""),
        _chip(f"finish: {traj.finish_reason}"),
        _chip(f"{traj.num_turns} turns · {traj.num_tool_calls} tool calls"),
    ]
    if traj.has_parse_error:
        chips.append(_chip("parse error", "bad"))
    if traj.has_tool_error:
        chips.append(_chip("tool error", "bad"))
    if traj.truncated:
        chips.append(_chip("truncated", "bad"))
    if traj.labels:
        chips.append(_chip(label_summary(traj.labels[0], traj.id), "good"))
    return '<div class="as-head">' + "".join(chips) + "</div>"


def label_summary(label: LabelPublic, trajectory_id: int) -> str:
    """One line for the newest label: its score, pairwise verdict from this trajectory's side, or step marks."""
    if label.kind == "pairwise":
        is_a = label.trajectory_id == trajectory_id
        other = label.other_trajectory_id if is_a else label.trajectory_id
        verdict = {"tie": "tie", "a": "better" if is_a else "worse", "b": "worse" if is_a else "better"}
        return f"labeled {verdict.get(label.choice or '', '?')} than #{other} by {label.labeler}"
    if label.kind == "step":
        marks = " ".join(f"{m.turn}:{'✓' if m.good else '✗'}" for m in label.step_marks)
        return f"step marks {marks} by {label.labeler}"
    return f"labeled {fmt_num(label.score, 2)} by {label.labeler}"


def render_judgements(traj: TrajectoryPublic) -> str:
    """Human label, reward-model scores and the automatic reward side by side (where they disagree is
    what a labeler and an RL engineer look for: a wrong rubric, or a reward model being gamed)."""
    human = label_summary(traj.labels[0], traj.id) if traj.labels else "not labeled yet"
    scores = "<br/>".join(f"{esc(k)}: {fmt_num(v)}" for k, v in sorted(traj.reward_model_scores.items()))
    automatic = traj.automatic_reward if traj.automatic_reward is not None else traj.reward
    return (
        '<table class="as-breakdown as-judgements"><tr><th>Human label</th><th>Reward model score</th>'
        f"<th>Automatic reward</th></tr><tr><td>{esc(human)}</td><td>{scores or '<i>no reward model yet</i>'}</td>"
        f"<td>{fmt_num(automatic)}</td></tr></table>"
    )


def render_reward_breakdown(data: Mapping[str, Any]) -> str:
    """The rubric's parts, the per-step rewards and the final answer."""
    breakdown = data.get("reward_breakdown") or {}
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{fmt_num(float(v))}</td></tr>" for k, v in breakdown.items())
    steps = data.get("step_rewards") or []
    step_text = ", ".join(fmt_num(float(r), 2) for r in steps) or "none"
    answer = data.get("final_answer")
    return (
        "<div><b>Final reward breakdown</b>"
        f'<table class="as-breakdown">{rows or "<tr><td>no breakdown recorded</td></tr>"}</table>'
        f"<div>Per-step rewards: {esc(step_text)}</div>"
        f"<div>Final answer: <b>{esc(answer) if answer is not None else '<i>none</i>'}</b></div></div>"
    )


def render_turn(turn: Mapping[str, Any], index: int) -> str:
    """One message block; assistant tool calls as pretty JSON, errors highlighted."""
    role = str(turn.get("role", "?"))
    classes = f"as-turn role-{esc(role)}" + (" tool-error" if turn.get("tool_error") else "")
    title = role if role != "tool" or not turn.get("name") else f"tool · {turn.get('name')}"
    extra = []
    if role == "assistant":
        extra.append(f"step reward {fmt_num(float(turn.get('step_reward') or 0.0), 2)}")
    span = f"tokens {turn.get('token_start', 0)}–{turn.get('token_end', 0)}"
    head = f'<div class="as-role">#{index} {esc(title)} <small>({esc(", ".join([*extra, span]))})</small></div>'
    body = f"<pre>{esc(turn.get('text', ''))}</pre>"
    calls = "".join(
        f'<pre class="as-toolcall" data-kind="tool-call">{esc(tool_call_json(c))}</pre>'
        for c in turn.get("tool_calls") or []
    )
    errors = ""
    if turn.get("parse_error"):
        errors += f'<div class="as-err">parse error: {esc(turn["parse_error"])}</div>'
    if turn.get("tool_error"):
        errors += '<div class="as-err">the tool call failed (the model saw this error)</div>'
    return f'<div class="{classes}">{head}{body}{calls}{errors}</div>'


def render_tokens(data: Mapping[str, Any], max_tokens: int = MAX_TOKENS_SHOWN) -> str:
    """Every token as a span: class `mask-0`/`mask-1`, the logprob in its `title` (hover)."""
    ids: Sequence[int] = data.get("token_ids") or []
    mask: Sequence[int] = data.get("loss_mask") or []
    logprobs: Sequence[float | None] = data.get("logprobs") or []
    texts: Sequence[str] | None = data.get("token_texts")
    spans = []
    for i, token_id in enumerate(ids[:max_tokens]):
        m = int(mask[i]) if i < len(mask) else 0
        lp = logprobs[i] if i < len(logprobs) else None
        piece = texts[i] if texts is not None and i < len(texts) else f"#{token_id} "
        low = " lowp" if m == 1 and lp is not None and lp < LOW_LOGPROB else ""
        title = f"token {i} · id {token_id} · mask {m}" + (f" · logprob {lp:.4f}" if lp is not None else "")
        spans.append(f'<span class="tok mask-{m}{low}" title="{esc(title)}">{esc(piece)}</span>')
    cut = len(ids) - max_tokens
    more = f"<div><i>… {cut} more tokens not shown</i></div>" if cut > 0 else ""
    trained = sum(int(x) for x in mask)
    legend = (
        f"<div><b>Tokens</b> ({len(ids)} total, {trained} trained): "
        '<span class="tok mask-1">sampled by the policy (loss mask 1)</span> '
        '<span class="tok mask-0">prompt / template / tool output (mask 0)</span> '
        '<span class="tok mask-1 lowp">sampled, logprob &lt; -2.5</span> · hover a token for its logprob</div>'
    )
    return f'{legend}<div class="as-tokens">{"".join(spans)}</div>{more}'


def render_trajectory(traj: TrajectoryPublic, *, show_tokens: bool = True) -> str:
    """The full replay: header, turns in order, reward breakdown, then the token view."""
    turns = traj.data.get("turns") or []
    blocks = "".join(render_turn(t, i) for i, t in enumerate(turns))
    if not turns:
        blocks = "<p><i>This trajectory recorded no turns.</i></p>"
    tokens = render_tokens(traj.data) if show_tokens else ""
    return (
        f'{TRAJECTORY_CSS}<div class="as-traj">{render_header(traj)}{render_judgements(traj)}{blocks}'
        f"{render_reward_breakdown(traj.data)}<hr/>{tokens}</div>"
    )


def assistant_turn_count(traj: TrajectoryPublic) -> int:
    """Assistant turns (the per-step scores a labeler can give)."""
    return sum(1 for t in traj.data.get("turns") or [] if t.get("role") == "assistant")
