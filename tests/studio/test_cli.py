"""The launcher as a user meets it: one-line config errors, and a clean up → SIGTERM → up cycle."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(
        STUDIO_DATA_DIR=str(tmp_path / "data"),
        STUDIO_API_PORT=str(_free_port()),
        STUDIO_UI_PORT=str(_free_port()),
        **extra,
    )
    return env


def _studio(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "studio.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert needle in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path, STUDIO_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    _assert_one_clear_line(_studio(["db", "upgrade"], env), "cannot reach the database")


def test_bad_redis_url_is_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path, STUDIO_REDIS_URL="ftp://example")
    _assert_one_clear_line(_studio(["up", "--no-ui"], env), "STUDIO_REDIS_URL")
    env = _env(tmp_path, STUDIO_REDIS_URL="redis://127.0.0.1:1/0")
    _assert_one_clear_line(_studio(["up", "--no-ui"], env), "cannot reach Redis")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env["STUDIO_API_PORT"])))
        busy.listen()
        _assert_one_clear_line(_studio(["up", "--no-ui"], env), "already in use")


def test_public_bind_without_token_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, STUDIO_API_HOST="0.0.0.0")
    _assert_one_clear_line(_studio(["up", "--no-ui"], env), "STUDIO_API_TOKEN")


def _up_until_healthy(env: dict[str, str], log: Path, timeout_s: float = 240) -> tuple[subprocess.Popen[str], set[int]]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "up"],
            env=env,
            cwd=REPO,
            text=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{env['STUDIO_API_PORT']}/api/v1/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            health = httpx.get(api, timeout=5).json()
            if health.get("ok") and "Agent Studio is up" in log.read_text():
                ui = httpx.get(f"http://127.0.0.1:{env['STUDIO_UI_PORT']}/", timeout=10)
                assert ui.status_code == 200
                assert health["db"]["ok"]
                assert health["broker"]["ok"]
                assert health["workers"]["ok"]
                descendants = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
                return proc, descendants
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    pytest.fail("studio up did not become healthy in time")


def _stop(proc: subprocess.Popen[str], descendants: set[int], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    out = log.read_text()
    assert proc.returncode == 0, out
    time.sleep(0.5)
    alive = [pid for pid in descendants if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not alive, f"orphans left behind: {alive}"
    return out


def test_up_sigterm_leaves_nothing_and_restarts(tmp_path: Path) -> None:
    env = _env(tmp_path)
    log = tmp_path / "up.log"
    proc, descendants = _up_until_healthy(env, log)
    assert len(descendants) >= 4  # redis-server, api, worker (+ pool), ui
    out = _stop(proc, descendants, log)
    assert "Stopping" in out
    redis_dir = tmp_path / "data" / "redis"
    assert not (redis_dir / "redis.sock").exists()
    assert not (redis_dir / "redis.pid").exists()
    proc, descendants = _up_until_healthy(env, log)
    _stop(proc, descendants, log)
