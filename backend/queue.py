"""The task contract between the API and the workers: task names, their queues, `enqueue`.

The API never imports worker code: it sends tasks by name through a broker-only
Celery client (`send_task`), created lazily from `settings.redis_url`. Routes call
`enqueue` only AFTER the run row is committed, so a worker always finds it.
"""

from __future__ import annotations

import json
import logging
import threading
from enum import StrEnum

from celery import Celery

from backend.core.config import get_settings

logger = logging.getLogger(__name__)


class TaskName(StrEnum):
    PING = "system.ping"
    TOOL_TEST = "tools.test"
    VALIDATE_ENV = "environments.validate"
    TRAIN = "runs.train"
    ROLLOUT = "runs.rollout"
    EVALUATE = "runs.evaluate"
    EXPORT_CHECKPOINT = "checkpoints.export"
    RM_TRAIN = "reward_models.train"


QUEUE_OF: dict[TaskName, str] = {
    TaskName.PING: "cpu",
    TaskName.TOOL_TEST: "cpu",
    TaskName.VALIDATE_ENV: "cpu",
    TaskName.TRAIN: "gpu",
    TaskName.ROLLOUT: "gpu",
    TaskName.EVALUATE: "gpu",
    TaskName.EXPORT_CHECKPOINT: "cpu",
    TaskName.RM_TRAIN: "gpu",  # model work (CPU-capable: a gpu-queue worker on a CPU host runs it too)
}
"""Queue per task: model work goes to `gpu` workers, everything light to `cpu`."""

TASK_OF_RUN_KIND: dict[str, TaskName] = {
    "train": TaskName.TRAIN,
    "rollout": TaskName.ROLLOUT,
    "eval": TaskName.EVALUATE,
}

TASK_OF_KIND: dict[str, TaskName] = {
    **TASK_OF_RUN_KIND,
    "ping": TaskName.PING,
    "tool_test": TaskName.TOOL_TEST,
    "validate": TaskName.VALIDATE_ENV,
    "export": TaskName.EXPORT_CHECKPOINT,
    "rm_train": TaskName.RM_TRAIN,
}
"""Task per `Run.kind`, for every kind of row (the sweeper re-sends a queued run by its kind)."""

_lock = threading.Lock()
_clients: dict[str, Celery] = {}


class BrokerNotConfiguredError(RuntimeError):
    """`STUDIO_REDIS_URL` is empty."""


def broker_url() -> str:
    url = get_settings().redis_url
    if not url:
        raise BrokerNotConfiguredError(
            "STUDIO_REDIS_URL is empty: start the stack with `studio up` (it runs an embedded Redis) "
            "or point STUDIO_REDIS_URL at a Redis server, e.g. redis://127.0.0.1:6379/0"
        )
    return url


def broker_client() -> Celery:
    """The process-wide broker-only client for the current broker URL (no result backend)."""
    url = broker_url()
    with _lock:
        if url not in _clients:
            client = Celery("studio-api", broker=url, set_as_current=False)
            client.conf.update(
                broker_connection_retry_on_startup=False,
                broker_connection_timeout=3,
                broker_connection_max_retries=1,
                task_serializer="json",
            )
            _clients[url] = client
        return _clients[url]


def enqueue(task: TaskName, run_id: int, *, task_id: str | None = None) -> str:
    """Send `task(run_id)` to its queue under `task_id` (the id stored on the run); returns the task id."""
    result = broker_client().send_task(
        str(task), args=[run_id], queue=QUEUE_OF[task], task_id=task_id, retry=True, retry_policy={"max_retries": 1}
    )
    logger.info("enqueued %s(run_id=%s) on %s as %s", task, run_id, QUEUE_OF[task], result.id)
    return str(result.id)


def ping_workers(timeout_s: float = 1.0) -> list[str]:
    """Hostnames of the workers that answered a broadcast ping within `timeout_s`."""
    replies = broker_client().control.ping(timeout=timeout_s) or []
    return sorted(name for reply in replies for name in reply)


def _message_task_id(raw: bytes | str) -> str | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list) and message:  # an `unacked` entry: [message, exchange, routing_key]
        message = message[0]
    headers = message.get("headers") if isinstance(message, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return str(task_id) if task_id else None


def live_task_ids() -> set[str] | None:
    """Ids of the tasks the broker still holds: waiting in a queue or delivered and not yet acked.

    Only Redis brokers can be looked into (kombu keeps each queue as a list and delivered,
    unacked messages in the `unacked` hash); None for any other broker.
    """
    with broker_client().connection_for_read() as conn:
        if conn.transport_cls not in ("redis", "rediss", "redis+socket", "sentinel"):
            return None
        client = conn.default_channel.client
        found: set[str] = set()
        for queue in sorted(set(QUEUE_OF.values())):
            for key in client.scan_iter(match=f"{queue}*"):
                if client.type(key) in (b"list", "list"):
                    found.update(filter(None, map(_message_task_id, client.lrange(key, 0, -1))))
        found.update(filter(None, map(_message_task_id, client.hvals("unacked"))))
        return found


def ping_broker(timeout_s: float = 2.0) -> None:
    """Raise if the broker cannot be reached."""
    with broker_client().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
