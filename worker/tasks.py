"""Thin named Celery tasks: each body is one call into `worker.jobs` with a `SqlRunStore`.

Names and queues come from `backend.queue` (the contract the API sends by);
`RunTask.on_failure` records the error on the run (train runs stay resumable).
The worker's run sweeper (`worker.sweeper`) is started here, on `worker_ready`, since
Celery imports this module in every worker (`include`) and `celery_app` must not import it.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready, worker_shutdown

from backend.core.config import get_settings
from backend.queue import QUEUE_OF, TaskName
from worker import jobs
from worker.celery_app import celery_app
from worker.sandbox.limits import SandboxLimits
from worker.store import SqlRunStore
from worker.sweeper import Sweeper

logger = logging.getLogger(__name__)


class RunTask(Task):  # type: ignore[misc]
    """Base task: args are `(run_id,)`; a raised exception marks the run failed.

    A duplicate delivery (the broker redelivering a job whose run already finished, or that another
    worker is running) is logged and dropped without touching the run.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (jobs.DuplicateDelivery, jobs.LeaseLost) as exc:
            logger.warning("%s: %s", self.name, exc)
            return None

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        run_id = int(args[0]) if args else int(kwargs["run_id"])
        logger.error("task %s for run %s failed: %s", self.name, run_id, exc)
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, SoftTimeLimitExceeded):
            limit = get_settings().task_time_limit_s
            error = f"the job ran past its time limit of {limit:.0f} s (STUDIO_TASK_TIME_LIMIT_S) and was stopped"
        try:
            SqlRunStore().set_status(run_id, "failed", error=error)
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
    limits = SandboxLimits.from_settings(settings)
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


_sweeper: Sweeper | None = None


@worker_ready.connect
def _start_sweeper(**_kwargs: object) -> None:
    """In the worker's main process: start the run sweeper (stale runs, queued runs with no live task)."""
    global _sweeper
    _sweeper = Sweeper(SqlRunStore()).start()
    logger.info("run sweeper started (every %.0f s)", _sweeper.interval_s)


@worker_shutdown.connect
def _stop_sweeper(**_kwargs: object) -> None:
    if _sweeper is not None:
        _sweeper.stop()
