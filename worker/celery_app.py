"""The worker's Celery instance: Redis broker + result backend from settings, `cpu` and `gpu` queues.

Late acks + reject-on-worker-lost make a killed worker's job redeliver; jobs are
idempotent (training resumes from its run dir). Prefetch 1: one long job at a time.
A gpu worker runs one job per visible GPU, each pool process pinned to its own (`worker.devices`).
Jobs have a time limit (`task_time_limit_s`). This module never imports `worker.tasks` (Celery
loads it through `include`), which keeps the import graph acyclic.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_init, worker_process_init
from celery.utils.log import current_process_index
from kombu import Queue

from backend.core.config import get_settings
from worker.devices import GPUS_PER_JOB_ENV, WORKER_GPUS_ENV, pin_current_process, visible_gpus

logger = logging.getLogger(__name__)


def _broker_url() -> str:
    url = get_settings().redis_url
    if not url:
        raise RuntimeError(
            "STUDIO_REDIS_URL is empty: start workers with `studio worker` / `studio up` (they export it), "
            "or set it, e.g. redis://127.0.0.1:6379/0"
        )
    return url


def create_celery_app() -> Celery:
    url = _broker_url()
    time_limit_s = get_settings().task_time_limit_s
    app = Celery("studio", broker=url, backend=url, include=["worker.tasks"])
    app.conf.update(
        task_queues=[Queue("cpu"), Queue("gpu")],
        task_default_queue="cpu",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=time_limit_s,  # raises in the job: `RunTask.on_failure` names the limit
        task_time_limit=time_limit_s + 60,  # a job that ignores the soft limit is killed
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


celery_app = create_celery_app()


@worker_init.connect
def _share_gpus(**_kwargs: object) -> None:
    """In the worker's main process, before the pool forks: record the GPUs its processes share out."""
    os.environ.setdefault(WORKER_GPUS_ENV, ",".join(visible_gpus()))
    os.environ.setdefault(GPUS_PER_JOB_ENV, str(get_settings().worker_gpus_per_job))


@worker_process_init.connect
def _pin_gpu(**_kwargs: object) -> None:
    """In each pool process: see only its own GPU(s) (`STUDIO_WORKER_GPUS_PER_JOB`), so jobs never share one."""
    index = current_process_index(base=0)
    device = pin_current_process(index)
    if device is not None:
        logger.info("pool process %s pinned to GPU %s", index, device)
