"""Runs → table rows and a Markdown status card (status, progress, ETA, worker, error).

Shared by the Runs, Train, Tools and Evaluate tabs for any job they watch.
"""

from __future__ import annotations

from collections.abc import Sequence

from backend.schemas.common import ACTIVE_STATUSES
from backend.schemas.run import RunPublic

RUN_HEADERS: list[str] = ["ID", "Name", "Kind", "Status", "Progress", "Step", "ETA", "Created"]
STATUS_ICONS: dict[str, str] = {
    "queued": "⏳",
    "running": "🏃",
    "succeeded": "✅",
    "failed": "❌",
    "cancelling": "🛑",
    "cancelled": "⏹️",
}


def format_duration(seconds: float | None) -> str:
    """`95` → `1m 35s`; None → `–`."""
    if seconds is None:
        return "–"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def step_text(run: RunPublic) -> str:
    return f"{run.current_step}/{run.total_steps}" if run.total_steps else str(run.current_step)


def run_rows(runs: Sequence[RunPublic]) -> list[list[str]]:
    """The runs table, newest first as the API sends them."""
    return [
        [
            str(r.id),
            r.name,
            r.kind,
            f"{STATUS_ICONS.get(r.status, '')} {r.status}",
            f"{r.progress:.0%}",
            step_text(r),
            format_duration(r.eta_s) if r.status in ACTIVE_STATUSES else "–",
            r.created_at.strftime("%Y-%m-%d %H:%M"),
        ]
        for r in runs
    ]


def progress_bar(fraction: float, width: int = 20) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


def environment_label(name: str | None, version: int | None) -> str:
    """ "environment <name> v<version>" for a run pinned to an environment version; "" otherwise."""
    if version is None:
        return ""
    return f"environment {name or '(unnamed)'} v{version}"


def run_card(run: RunPublic) -> str:
    """A Markdown status card for one run."""
    lines = [
        f"### {STATUS_ICONS.get(run.status, '')} Run #{run.id} · {run.name}",
        f"**{run.kind}** · status **{run.status}** · preset `{run.preset or 'custom'}`",
        f"`{progress_bar(run.progress)}` {run.progress:.0%} · step {step_text(run)}",
    ]
    env = environment_label(run.environment_name, run.environment_version)
    if env:
        lines.append(env)
    if run.status in ACTIVE_STATUSES:
        lines.append(f"ETA {format_duration(run.eta_s)}" + (" · cancel requested" if run.cancel_requested else ""))
    if run.duration_s is not None:
        lines.append(f"Took {format_duration(run.duration_s)}")
    if run.worker_hostname:
        lines.append(f"Worker `{run.worker_hostname}`")
    if run.status == "queued":
        lines.append("Waiting for a worker: if it stays queued, check that `studio up` started one (Health above).")
    if run.error:
        lines.append(f"**Error:** {run.error}")
    return "\n\n".join(lines)


def is_finished(run: RunPublic) -> bool:
    return run.status not in ACTIVE_STATUSES
