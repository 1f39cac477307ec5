"""`studio up`: preflight → migrations → Redis → API, worker, UI → wait → watch → clean stop.

Every part is the real service: the embedded Redis is a real redis-server, the
worker a real Celery worker. While it runs, a dead embedded Redis or worker is
started again (a few times per window; its queue is on disk, and the worker's sweeper
re-sends queued runs the broker lost); a dead API or UI stops the studio. Returns
the process exit code; never leaves a child process or a stale socket behind.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from rich.console import Console

from backend.core.config import Settings
from backend.core.security import auth_required
from studio import preflight
from studio.embedded_redis import EmbeddedRedis
from studio.processes import api_args, print_urls, ui_args, upgrade, worker_args
from studio.supervisor import Supervisor

POLL_S = 0.5
RESTARTABLE = ("worker",)
"""Children `studio up` starts again when they die (the API and UI stopping ends the studio)."""


@dataclass
class RestartBudget:
    """At most `limit` restarts of one part within `window_s`: a part that keeps dying stops the studio."""

    limit: int = 5
    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    history: dict[str, list[float]] = field(default_factory=dict)

    def allow(self, name: str) -> bool:
        now = self.clock()
        recent = [t for t in self.history.get(name, []) if now - t < self.window_s]
        self.history[name] = recent
        if len(recent) >= self.limit:
            return False
        recent.append(now)
        return True


def keep_alive(
    supervisor: Supervisor, redis: EmbeddedRedis | None, budget: RestartBudget, console: Console
) -> str | None:
    """One watch round: restart a dead embedded Redis or worker; the name of a dead part that ends the studio."""
    if redis is not None and not redis.is_running():
        if not budget.allow("redis"):
            return "embedded Redis"
        console.print("[yellow]the embedded Redis stopped; starting it again (its queue is kept on disk)[/]")
        redis.start()
    dead = supervisor.first_exited()
    if dead is None:
        return None
    if dead.name in RESTARTABLE and budget.allow(dead.name):
        code = dead.process.returncode  # type: ignore[union-attr]
        console.print(f"[yellow]{dead.name} stopped unexpectedly (code {code}); starting it again[/]")
        supervisor.restart(dead)
        return None
    return dead.name


def _preflight(settings: Settings, with_ui: bool) -> None:
    preflight.check_access(settings)
    preflight.check_port_free(settings.api_host, settings.api_port, "API", "STUDIO_API_PORT")
    if with_ui:
        preflight.check_port_free(settings.ui_host, settings.ui_port, "UI", "STUDIO_UI_PORT")
    preflight.check_database(settings.resolved_database_url)
    if settings.redis_url:
        preflight.check_redis(settings.redis_url)


def _headers(settings: Settings) -> dict[str, str]:
    headers = {"X-Studio-Client": "studio-launcher"}  # the API's CSRF guard wants it on state-changing requests
    if settings.api_token:
        headers["Authorization"] = f"Bearer {settings.api_token}"
    return headers


def wait_ready(settings: Settings, supervisor: Supervisor, with_ui: bool, timeout_s: float) -> dict[str, object]:
    """Poll /health until db, broker and a worker are ok and the UI answers."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        dead = supervisor.first_exited()
        if dead is not None:
            code = dead.process.returncode  # type: ignore[union-attr]
            raise preflight.ConfigError(f"{dead.name} exited during startup (code {code}); see its output above")
        try:
            resp = httpx.get(settings.resolved_api_url + "/api/v1/health", headers=_headers(settings), timeout=5)
            last = resp.json()
            ui_ok = True
            if with_ui:
                ui_ok = httpx.get(f"http://127.0.0.1:{settings.ui_port}/", timeout=5).status_code < 500
            if last.get("ok") and ui_ok:
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(POLL_S)
    raise preflight.ConfigError(f"the studio did not become healthy within {timeout_s:.0f} s (last health: {last})")


def launch_demo(settings: Settings, console: Console) -> None:
    body = {"kind": "train", "name": "quickstart demo", "preset": "quickstart"}
    resp = httpx.post(settings.resolved_api_url + "/api/v1/runs", json=body, headers=_headers(settings), timeout=30)
    if resp.status_code >= 400:
        console.print(f"[yellow]could not launch the demo run: {resp.status_code} {resp.text}[/]")
        return
    run = resp.json()
    console.print(f"Launched the quickstart training run #{run.get('id')} — watch it in the Runs tab.")


def _probe_token(settings: Settings) -> dict[str, str]:
    """When the API will demand a token and no legacy one is set, a per-launch admin token for the launcher's own
    readiness probe and demo launch. Only the API process gets it (never the worker or the UI), and it dies with
    this launch."""
    if settings.api_token or not auth_required(settings, public=False):
        return {}
    return {"STUDIO_API_TOKEN": secrets.token_urlsafe(32)}


def run_studio(settings: Settings, *, demo: bool, with_ui: bool, ready_timeout_s: float, console: Console) -> int:
    _preflight(settings, with_ui)
    api_env = _probe_token(settings)
    if api_env:
        settings = settings.model_copy(update={"api_token": api_env["STUDIO_API_TOKEN"]})
    console.print("Applying database migrations…")
    upgrade(settings)
    redis = EmbeddedRedis(settings.data_dir) if not settings.redis_url else None
    env = dict(os.environ)
    env["STUDIO_DATA_DIR"] = str(settings.data_dir.resolve())
    supervisor = Supervisor(env=env)
    try:
        redis_url = settings.redis_url or redis.start()  # type: ignore[union-attr]
        env["STUDIO_REDIS_URL"] = redis_url
        supervisor.spawn("api", api_args(settings), extra_env=api_env)
        supervisor.spawn("worker", worker_args(settings))
        if with_ui:
            supervisor.spawn("ui", ui_args())
        console.print("Starting API, worker" + (" and UI" if with_ui else "") + "…")
        wait_ready(settings, supervisor, with_ui, ready_timeout_s)
        print_urls(settings, with_ui, redis_url)
        if demo:
            launch_demo(settings, console)
        budget = RestartBudget()
        while True:
            fatal = keep_alive(supervisor, redis, budget, console)
            if fatal is not None:
                console.print(f"[red]{fatal} stopped unexpectedly (and will not be restarted); shutting down[/]")
                return 1
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        console.print("Stopping…")
        return 0
    finally:
        supervisor.stop_all()
        if redis is not None:
            redis.stop()
