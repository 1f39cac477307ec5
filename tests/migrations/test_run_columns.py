"""Revision 0003_run_columns carries old rows over: `_` keys in `runs.config` become typed columns."""

from __future__ import annotations

import json
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from backend.core.db import alembic_config

EVAL = {"datasets": ["hotpotqa"], "methods": ["agent"], "limit": 5, "checkpoint_path": "/c/step_2"}
RESOLVED = {"model": {"name_or_path": "smollm2-135m"}, "optim": {"total_steps": 3}, "preset_file": "quickstart.toml"}


def _insert(conn, run_id: int, kind: str, config: dict, *, started: bool) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO runs (id, name, kind, status, config, progress, current_step, resumable, cancel_requested,"
            " created_at, started_at) VALUES (:id, :name, :kind, 'succeeded', :config, 0, 0, 0, 0,"
            " '2026-11-30 10:00:00', :started)"
        ),
        {
            "id": run_id,
            "name": f"r{run_id}",
            "kind": kind,
            "config": json.dumps(config),
            "started": "2026-11-30 10:01:00" if started else None,
        },
    )


def test_old_rows_with_private_keys_are_carried_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        _insert(conn, 1, "eval", {"model": {"name_or_path": "m"}, "_eval": EVAL}, started=True)
        _insert(conn, 2, "train", {**RESOLVED, "_resume": True, "_auto_resumes": 2}, started=True)
        _insert(conn, 3, "train", {"optim": {"total_steps": 3}, "_auto_resumes": "many"}, started=False)
        _insert(conn, 4, "tool_test", {"tool_id": 7, "arguments": {"q": "x"}, "_auto_resumes": -1000}, started=True)
    command.upgrade(config, "0003_run_columns")
    with engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text("SELECT id, requested_config, resolved_config, eval_spec, auto_resumes, owner_token FROM runs")
            )
        }
        columns = {row[1] for row in conn.execute(text("PRAGMA table_info(runs)"))}
    assert "config" not in columns
    load = lambda raw: None if raw is None else json.loads(raw)  # noqa: E731
    assert load(rows[1].eval_spec) == EVAL
    assert load(rows[1].requested_config) == {"model": {"name_or_path": "m"}}
    assert load(rows[1].resolved_config) is None
    assert load(rows[2].requested_config) == RESOLVED
    assert load(rows[2].resolved_config) == RESOLVED, "a started train run's config was already the resolved one"
    assert rows[2].auto_resumes == 2
    assert (load(rows[3].requested_config), load(rows[3].resolved_config)) == ({"optim": {"total_steps": 3}}, None)
    assert rows[3].auto_resumes == 0, "a string count (once accepted from clients) counts as none"
    assert rows[4].auto_resumes == 0, "a negative count counts as none"
    assert load(rows[4].requested_config) == {"tool_id": 7, "arguments": {"q": "x"}}
    assert all(not any(k.startswith("_") for k in load(r.requested_config)) for r in rows.values())
    command.downgrade(config, "0001")
    with engine.connect() as conn:
        back = {r.id: json.loads(r.config) for r in conn.execute(text("SELECT id, config FROM runs"))}
    assert back[1]["_eval"] == EVAL
    assert back[2]["_auto_resumes"] == 2
    engine.dispose()
