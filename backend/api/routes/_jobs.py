"""Shared route helper: enqueue a committed run, failing it clearly when the broker is down."""

from __future__ import annotations

import logging

from fastapi import HTTPException
from sqlalchemy.orm import Session

from backend.api.deps import Enqueue
from backend.crud import runs as runs_crud
from backend.models.run import Run
from backend.queue import TaskName

logger = logging.getLogger(__name__)


def enqueue_committed(session: Session, enqueue: Enqueue, task: TaskName, run: Run) -> Run:
    """Send the task for an already committed run under its stored task id.

    On broker failure the run is marked failed and the answer is 503. Should this process die
    between the commit and the send, the worker's sweeper finds the queued run with no live task
    and sends it.
    """
    try:
        enqueue(task, run.id, task_id=run.celery_task_id)
    except Exception as exc:
        logger.exception("could not enqueue %s for run %s", task, run.id)
        runs_crud.set_status(session, run_id=run.id, status="failed", error=f"could not reach the broker: {exc}")
        session.commit()
        raise HTTPException(status_code=503, detail=f"run {run.id} could not be queued: {exc}") from exc
    return run
