"""The studio's processes and schema step, shared by `studio` commands and the `studio up` launcher.

Command lines for the API, the worker and the UI, the Alembic upgrade and the banner. Both
`studio.cli` and `studio.launcher` import this module, and neither imports the other's
internals (import-linter forbids `studio.launcher` → `studio.cli`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from backend.core.config import Settings
from studio import preflight

REPO_ROOT = Path(__file__).resolve().parents[1]
console = Console()


def alembic_config(settings: Settings):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", settings.resolved_database_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    from alembic import command

    preflight.check_database(settings.resolved_database_url)
    command.upgrade(alembic_config(settings), revision)


def api_args(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "backend.main:create_app",
        "--factory",
        "--host",
        settings.api_host,
        "--port",
        str(settings.api_port),
        "--log-level",
        "warning",
    ]


def celery_worker_argv(
    queues: str, concurrency: int, name: str, loglevel: str = "INFO", extra: tuple[str, ...] = ()
) -> list[str]:
    """The one Celery worker command line; `studio up` and the tests that start real workers build it here."""
    head = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues, "-c", str(concurrency)]
    return [*head, "-n", name, "--loglevel", loglevel, "--without-gossip", "--without-mingle", *extra]


def worker_args(settings: Settings, queues: str | None = None) -> list[str]:
    from worker.devices import visible_gpus, worker_concurrency

    queue_list = queues.split(",") if queues else list(settings.queues)
    gpus = visible_gpus()
    concurrency = worker_concurrency(settings.worker_concurrency, queue_list, gpus, settings.worker_gpus_per_job)
    return celery_worker_argv(",".join(queue_list), concurrency, f"studio-{os.getpid()}@%h")


def ui_args() -> list[str]:
    return [sys.executable, "-m", "app.main"]


def print_urls(settings: Settings, with_ui: bool, redis_url: str) -> None:
    table = Table(title="Agent Studio is up", show_header=False)
    if with_ui:
        table.add_row("Studio (UI)", f"http://{settings.ui_host}:{settings.ui_port}")
    table.add_row("API", settings.resolved_api_url + "/api/v1")
    table.add_row("API docs", settings.resolved_api_url + "/docs")
    table.add_row("Database", preflight.redact(settings.resolved_database_url))
    table.add_row("Broker", preflight.redact(redis_url))
    table.add_row("Data dir", str(settings.data_dir.resolve()))
    console.print(table)
    console.print("Press Ctrl-C to stop.", style="dim")
    sys.stdout.flush()
    time.sleep(0)
