"""The worker's Celery instance: Redis broker + result backend from settings, `cpu` and `gpu` queues.

Late acks + reject-on-worker-lost make a killed worker's job redeliver; jobs are
idempotent (training resumes from its run dir). Prefetch 1: one long job at a time.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready
from kombu import Queue

from backend.core.config import get_settings


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
    app = Celery("studio", broker=url, backend=url, include=["worker.tasks"])
    app.conf.update(
        task_queues=[Queue("cpu"), Queue("gpu")],
        task_default_queue="cpu",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


celery_app = create_celery_app()


@worker_ready.connect
def _sweep_stale_runs(**_kwargs: object) -> None:
    """On startup, fail runs whose worker died (no heartbeat for `heartbeat_timeout_s`)."""
    from worker.tasks import sweep_stale_runs

    sweep_stale_runs()
