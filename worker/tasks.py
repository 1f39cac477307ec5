"""Thin named Celery tasks: each body is one call into `worker.jobs` with a `SqlRunStore`.

Names and queues come from `backend.queue` (the contract the API sends by);
`RunTask.on_failure` records the error on the run (train runs stay resumable).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Task

from backend.core.config import get_settings
from backend.queue import QUEUE_OF, TaskName, enqueue
from worker import jobs
from worker.celery_app import celery_app
from worker.sandbox import SandboxLimits
from worker.store import SqlRunStore

logger = logging.getLogger(__name__)


class RunTask(Task):  # type: ignore[misc]
    """Base task: args are `(run_id,)`; a raised exception marks the run failed.

    A duplicate delivery (the broker redelivering a job whose run already finished, or that another
    worker is running) is logged and dropped without touching the run.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except jobs.DuplicateDelivery as exc:
            logger.warning("%s: %s", self.name, exc)
            return None

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:  # fmt: skip
        run_id = int(args[0]) if args else int(kwargs["run_id"])
        logger.error("task %s for run %s failed: %s", self.name, run_id, exc)
        try:
            SqlRunStore().set_status(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        except Exception:
            logger.exception("could not mark run %s failed", run_id)

    @property
    def worker_hostname(self) -> str:
        return str(getattr(self.request, "hostname", None) or socket.gethostname())


def _runs_dir() -> Any:
    return get_settings().runs_dir.resolve()


@celery_app.task(name=TaskName.PING, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.PING])
def ping(self: RunTask, run_id: int) -> None:
    jobs.ping_job(run_id, SqlRunStore(), hostname=self.worker_hostname)


@celery_app.task(name=TaskName.TOOL_TEST, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.TOOL_TEST])
def test_tool(self: RunTask, run_id: int) -> None:
    settings = get_settings()
    limits = SandboxLimits(time_limit_s=settings.tool_time_limit_s, memory_limit_mb=settings.tool_memory_limit_mb)
    jobs.tool_test_job(run_id, SqlRunStore(), hostname=self.worker_hostname, limits=limits)


@celery_app.task(name=TaskName.VALIDATE_ENV, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.VALIDATE_ENV])
def validate_environment(self: RunTask, run_id: int) -> None:
    jobs.validate_env_job(run_id, SqlRunStore(), hostname=self.worker_hostname)


@celery_app.task(name=TaskName.TRAIN, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.TRAIN])
def train_policy(self: RunTask, run_id: int) -> None:
    jobs.train_job(run_id, SqlRunStore(), hostname=self.worker_hostname, runs_dir=_runs_dir())


@celery_app.task(name=TaskName.ROLLOUT, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.ROLLOUT])
def run_rollouts(self: RunTask, run_id: int) -> None:
    jobs.rollout_job(run_id, SqlRunStore(), hostname=self.worker_hostname, runs_dir=_runs_dir())


@celery_app.task(name=TaskName.EVALUATE, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.EVALUATE])
def evaluate(self: RunTask, run_id: int) -> None:
    jobs.evaluate_job(run_id, SqlRunStore(), hostname=self.worker_hostname, runs_dir=_runs_dir())


@celery_app.task(name=TaskName.EXPORT_CHECKPOINT, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.EXPORT_CHECKPOINT])
def export_checkpoint(self: RunTask, run_id: int) -> None:
    jobs.export_checkpoint_job(run_id, SqlRunStore(), hostname=self.worker_hostname, runs_dir=_runs_dir())


@celery_app.task(name=TaskName.RM_TRAIN, base=RunTask, bind=True, queue=QUEUE_OF[TaskName.RM_TRAIN])
def train_reward_model(self: RunTask, run_id: int) -> None:
    """Issue #15: a reward model from runs' labels (CPU-capable, on the gpu queue)."""
    jobs.rm_train_job(run_id, SqlRunStore(), hostname=self.worker_hostname, runs_dir=_runs_dir())


def sweep_stale_runs() -> list[int]:
    """On worker startup: runs whose worker died are resumed (train, attempts left) or failed."""
    settings = get_settings()
    store = SqlRunStore()
    try:
        sweep = store.sweep_stale_runs(settings.heartbeat_timeout_s, settings.auto_resume_attempts)
    except Exception:
        logger.exception("stale-run sweep failed")
        return []
    if sweep.failed:
        logger.warning("marked runs %s failed (no heartbeat)", sweep.failed)
    for run_id in sweep.requeued:
        try:
            enqueue(TaskName.TRAIN, run_id)
            logger.warning("run %s lost its worker; queued again to resume from its last checkpoint", run_id)
        except Exception as exc:
            store.set_status(run_id, "failed", error=f"could not queue the automatic resume: {exc}")
    return [*sweep.failed, *sweep.requeued]
