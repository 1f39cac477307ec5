"""The worker's sweeper: a thread in each worker's main process that keeps runs from being lost.

Every `sweep_interval_s` it (1) fails or requeues runs whose owner stopped heartbeating (database
time, conditional UPDATEs, see `backend.crud.runs.sweep_stale_runs`) and (2) re-sends queued runs
that have no live task. The rule for (2): a queued run with no task id (a resume the sweep just
queued), or one whose task id was sent more than `requeue_after_s` ago and is no longer in the
broker (not waiting in a queue list, not delivered-and-unacked). Only Redis brokers can be looked
into; on others only runs with no task id are re-sent. Each re-send first swaps the run's task id in
one conditional UPDATE, so of several sweepers only one sends; a duplicate delivery that slips
through anyway is dropped by the job's claim. After a Redis restart (or a crash between the API's
commit and its send) the queue is thus rebuilt from the database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backend import queue
from backend.core.config import Settings, get_settings
from worker.store import RunStore

logger = logging.getLogger(__name__)

Send = Callable[..., str]


@dataclass(frozen=True)
class SweepReport:
    failed: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)


def resend_lost_tasks(
    store: RunStore,
    *,
    older_than_s: float,
    send: Send = queue.enqueue,
    live_task_ids: Callable[[], set[str] | None] = queue.live_task_ids,
) -> list[int]:
    """Send queued runs again whose task the broker no longer holds (see the module docstring)."""
    candidates = store.queued_runs_to_check(older_than_s)
    if not candidates:
        return []
    live = live_task_ids()
    resent: list[int] = []
    for run in candidates:
        if run.celery_task_id is not None and (live is None or run.celery_task_id in live):
            continue
        task = queue.TASK_OF_KIND.get(run.kind)
        if task is None:
            logger.error("queued run %s has unknown kind %r; not re-sent", run.id, run.kind)
            continue
        task_id = store.take_requeue(run.id, run.celery_task_id)
        if task_id is None:
            continue  # another sweeper or a worker got there first
        try:
            send(task, run.id, task_id=task_id)
        except Exception:
            logger.exception("could not re-send run %s (retried at the next sweep)", run.id)
            continue
        logger.warning("run %s was queued with no live task; sent again as %s", run.id, task_id)
        resent.append(run.id)
    return resent


def sweep_once(
    store: RunStore,
    settings: Settings,
    *,
    send: Send = queue.enqueue,
    live_task_ids: Callable[[], set[str] | None] = queue.live_task_ids,
) -> SweepReport:
    """One round: stale runs first (their resumes are then sent like any queued run with no task)."""
    stale = store.sweep_stale_runs(settings.heartbeat_timeout_s, settings.auto_resume_attempts)
    if stale.failed:
        logger.warning("marked runs %s failed (no heartbeat for %.0f s)", stale.failed, settings.heartbeat_timeout_s)
    resent = resend_lost_tasks(store, older_than_s=settings.requeue_after_s, send=send, live_task_ids=live_task_ids)
    return SweepReport(failed=stale.failed, resumed=stale.requeued, resent=resent)


class Sweeper:
    """A daemon thread calling `sweep_once` now and then every `interval_s` until `stop()`."""

    def __init__(self, store: RunStore, settings: Settings | None = None, *, interval_s: float | None = None) -> None:
        self.store, self.settings = store, settings or get_settings()
        self.interval_s = interval_s or self.settings.sweep_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-sweeper", daemon=True)

    def _loop(self) -> None:
        while True:
            try:
                sweep_once(self.store, self.settings)
            except Exception:
                logger.exception("run sweep failed (retried in %.0f s)", self.interval_s)
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
