"""Training health alerts computed from the metric stream: the failure modes of multi-turn RL.

Each check is a small pure function over `MetricPoint`s returning an `Alert`
or None: tool-call rate collapse, parse-error spike, flat groups (no GRPO
signal), non-finite loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from app.render.trajectory import esc
from backend.schemas.run import MetricPoint

Level = Literal["warning", "error"]


@dataclass(frozen=True)
class Alert:
    """One finding shown above the curves."""

    level: Level
    """"error" stops being useful training, "warning" needs a look."""
    title: str
    """Short name of the problem."""
    message: str
    """What was seen and what to try."""
    step: int
    """The step where it was seen (jump there in Trajectories)."""


def _values(points: Sequence[MetricPoint], key: str) -> list[tuple[int, float]]:
    return [(p.step, p.values[key]) for p in points if key in p.values and math.isfinite(p.values[key])]


def check_nan_loss(points: Sequence[MetricPoint]) -> Alert | None:
    """Any `loss/*` value that is NaN or infinite in the newest point."""
    if not points:
        return None
    last = points[-1]
    bad = sorted(k for k, v in last.values.items() if k.startswith("loss/") and not math.isfinite(v))
    if not bad:
        return None
    return Alert(
        "error",
        "Non-finite loss",
        f"{', '.join(bad)} is NaN/inf at step {last.step}: lower the learning "
        "rate, check max_grad_norm, or resume from an earlier checkpoint.",
        last.step,
    )


def check_tool_collapse(points: Sequence[MetricPoint], *, window: int = 3, ratio: float = 0.25) -> Alert | None:
    """Tool calls per trajectory fell below `ratio` × their earlier peak (the policy stopped using tools)."""
    values = _values(points, "rollout/tool_calls_per_traj")
    if len(values) < window + 1:
        return None
    peak = max(v for _, v in values[:-window])
    recent = sum(v for _, v in values[-window:]) / window
    if peak < 0.5 or recent >= ratio * peak:
        return None
    return Alert(
        "warning",
        "Tool-call rate collapsed",
        f"tool calls per trajectory fell from {peak:.2f} to "
        f"{recent:.2f} (last {window} steps): the policy stopped searching. Add format reward, force the "
        "first search, or lower the learning rate.",
        values[-1][0],
    )


def check_parse_spike(points: Sequence[MetricPoint], *, threshold: float = 0.5) -> Alert | None:
    """The newest parse-error rate is above `threshold` and at least double its earlier mean."""
    values = _values(points, "rollout/parse_error_rate")
    if not values:
        return None
    step, last = values[-1]
    earlier = [v for _, v in values[:-1]]
    base = sum(earlier) / len(earlier) if earlier else 0.0
    if last < threshold or (earlier and last < 2 * base):
        return None
    return Alert(
        "warning",
        "Parse errors spiking",
        f"{last:.0%} of assistant turns had an unparseable tool call at "
        f"step {step} (before: {base:.0%}). Inspect the trajectories of this step.",
        step,
    )


def check_flat_groups(points: Sequence[MetricPoint], *, threshold: float = 0.8) -> Alert | None:
    """Most GRPO groups have zero reward variance: their advantages are 0, so nothing is learned."""
    values = _values(points, "rollout/zero_std_group_frac")
    if not values or values[-1][1] < threshold:
        return None
    step, frac = values[-1]
    return Alert(
        "warning",
        "No learning signal",
        f"{frac:.0%} of groups at step {step} have identical rewards "
        "(zero variance → zero advantage). Raise group_size, use an easier task or a shaped reward.",
        step,
    )


CHECKS: tuple[Callable[[Sequence[MetricPoint]], Alert | None], ...] = (
    check_nan_loss,
    check_tool_collapse,
    check_parse_spike,
    check_flat_groups,
)


def health_alerts(points: Sequence[MetricPoint]) -> list[Alert]:
    """Every check's finding, errors first."""
    found = [a for a in (check(points) for check in CHECKS) if a is not None]
    return sorted(found, key=lambda a: a.level != "error")


def render_alerts(alerts: Sequence[Alert]) -> str:
    """HTML banners (empty string when healthy, so the UI shows nothing)."""
    if not alerts:
        return ""
    colours = {"error": ("#fef2f2", "#b91c1c"), "warning": ("#fffbeb", "#92400e")}
    parts = []
    for alert in alerts:
        bg, fg = colours[alert.level]
        parts.append(
            f'<div class="as-alert as-alert-{alert.level}" style="background:{bg};color:{fg};padding:6px 10px;'
            f'border-radius:4px;margin:4px 0"><b>{esc(alert.title)}</b> (step {alert.step}): {esc(alert.message)}</div>'
        )
    return "".join(parts)
