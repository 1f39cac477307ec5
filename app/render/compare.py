"""Side-by-side view of the members of one GRPO group (same task, several samples).

Columns sorted by reward (best first) so a reader sees at a glance what the
high-reward samples did differently: tool calls, answers, errors.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.render.trajectory import TRAJECTORY_CSS, esc, fmt_num, render_turn
from backend.schemas.trajectory import TrajectoryPublic

GROUP_CSS = """
<style>
.as-group{display:grid;gap:10px;align-items:start}
.as-group .as-col{border:1px solid #e2e8f0;border-radius:6px;padding:6px;min-width:0;overflow:auto}
.as-group .as-col.best{border-color:#16a34a;border-width:2px}
.as-group .as-colhead{font-weight:600;margin-bottom:4px}
</style>
"""


def group_stats(members: Sequence[TrajectoryPublic]) -> str:
    """One line: group size, reward mean and spread (zero spread = no GRPO signal)."""
    if not members:
        return "empty group"
    rewards = [m.reward for m in members]
    mean = sum(rewards) / len(rewards)
    spread = max(rewards) - min(rewards)
    note = " · all rewards equal: this group gives GRPO no learning signal" if spread < 1e-9 else ""
    return f"{len(members)} samples · mean reward {fmt_num(mean)} · spread {fmt_num(spread)}{note}"


def render_group(members: Sequence[TrajectoryPublic], *, highlight_id: int | None = None) -> str:
    """All members as columns (best reward first); `highlight_id` marks the one being replayed."""
    if not members:
        return "<p><i>No group members to compare.</i></p>"
    ordered = sorted(members, key=lambda m: (-m.reward, m.id))
    columns = []
    for member in ordered:
        flags = [
            f
            for f, on in (
                ("parse error", member.has_parse_error),
                ("tool error", member.has_tool_error),
                ("truncated", member.truncated),
            )
            if on
        ]
        head = (
            f'<div class="as-colhead">#{member.id}{" (viewing)" if member.id == highlight_id else ""} · '
            f"reward {fmt_num(member.reward)} · {member.num_tool_calls} tool calls · {esc(member.finish_reason)}"
            f"{' · ' + esc(', '.join(flags)) if flags else ''}</div>"
        )
        answer = member.data.get("final_answer")
        answer_html = f"<div>answer: <b>{esc(answer) if answer is not None else '<i>none</i>'}</b></div>"
        turns = "".join(
            render_turn(t, i) for i, t in enumerate(member.data.get("turns") or []) if t.get("role") != "system"
        )
        best = " best" if member is ordered[0] and member.reward > ordered[-1].reward else ""
        columns.append(f'<div class="as-col{best}" data-trajectory="{member.id}">{head}{answer_html}{turns}</div>')
    style = f'style="grid-template-columns:repeat({len(columns)},minmax(260px,1fr))"'
    return (
        f'{TRAJECTORY_CSS}{GROUP_CSS}<div class="as-traj"><p>{esc(group_stats(members))}</p>'
        f'<div class="as-group" {style}>{"".join(columns)}</div></div>'
    )


def render_pair(a: TrajectoryPublic, b: TrajectoryPublic) -> str:
    """Two members of a group as columns A and B for a blind pairwise judgement (no rewards shown).

    Assistant turns are numbered from 0 (`step k`), the numbering step marks use.
    """
    columns = []
    for letter, member in (("A", a), ("B", b)):
        answer = member.data.get("final_answer")
        answer_html = f"<div>answer: <b>{esc(answer) if answer is not None else '<i>none</i>'}</b></div>"
        turns, step = [], 0
        for i, turn in enumerate(member.data.get("turns") or []):
            if turn.get("role") == "system":
                continue
            if turn.get("role") == "assistant":
                turns.append(f'<div class="as-colhead">step {step}</div>')
                step += 1
            turns.append(render_turn(turn, i))
        head = f'<div class="as-colhead">{letter} · #{member.id} · {member.num_tool_calls} tool calls</div>'
        columns.append(f'<div class="as-col" data-side="{letter}">{head}{answer_html}{"".join(turns)}</div>')
    style = 'style="grid-template-columns:repeat(2,minmax(260px,1fr))"'
    body = f'<div class="as-group" {style}>{"".join(columns)}</div>'
    return f'{TRAJECTORY_CSS}{GROUP_CSS}<div class="as-traj">{body}</div>'
