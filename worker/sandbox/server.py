"""One sandboxed server process: start it, load the user's function once, ask it calls under a deadline, kill it.

Reads and writes go through `select` with a deadline on raw pipe fds, so a server that hangs,
floods or dies can only make a request fail (`ServerBroken`); killing the bwrap process group
takes the whole PID namespace with it (`--die-with-parent`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.sandbox.bwrap import sandbox_command, sandbox_env, server_argv
from worker.sandbox.limits import SandboxLimits, ToolAccess, size_label


class ServerBroken(Exception):
    """The server did not answer properly: it died, hung past the deadline, or broke the protocol."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ArgumentsTooLarge(ValueError):
    """The call's arguments exceed `argument_limit_bytes` (nothing was sent)."""


class ToolServer:
    """A live sandboxed interpreter holding one user function (`kind` 'tool' or 'reward')."""

    def __init__(
        self,
        limits: SandboxLimits,
        mode: str,
        bwrap: str | None,
        access: ToolAccess | None = None,
        proxy_socket: str | None = None,
    ) -> None:
        self.limits = limits
        self._scratch = tempfile.mkdtemp(prefix="studio-unsandboxed-") if mode == "unsandboxed" else None
        env = sandbox_env(access)
        if self._scratch is None:
            command = sandbox_command(
                limits, str(bwrap), server_argv(limits, proxied=proxy_socket is not None), access, proxy_socket
            )
        else:  # no isolation (explicit opt-in): the files are linked in the scratch dir, the network is open
            command = server_argv(limits)
            env.update(HOME=self._scratch, TMPDIR=self._scratch)
            env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
            if access is not None and access.files:
                data = Path(self._scratch) / "data"
                data.mkdir()
                for name, path in access.files:
                    (data / name).symlink_to(path)
                env["STUDIO_TOOL_DATA"] = str(data)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server; closed by kill()
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=self._scratch,
            start_new_session=True,
            bufsize=0,
        )
        self._buffer = b""
        self._next_id = 0
        self.cpu_s = 0.0
        """CPU seconds the server reported after its last reply (for recycling before RLIMIT_CPU)."""
        # A reply is a capped result and capped prints, JSON-escaped (at most 6x for control characters).
        self._max_line = 8 * (limits.result_limit_bytes + limits.stdout_limit_bytes) + 2 * 1024 * 1024

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def request(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait for its reply until `timeout_s`; raise `ServerBroken` otherwise."""
        self._next_id += 1
        line = (json.dumps({**payload, "id": self._next_id}, ensure_ascii=False) + "\n").encode()
        if payload.get("op") == "call" and len(line) > self.limits.argument_limit_bytes:
            raise ArgumentsTooLarge(
                f"the arguments are {len(line)} bytes as JSON, over the "
                f"{size_label(self.limits.argument_limit_bytes)} limit"
            )
        deadline = time.monotonic() + timeout_s
        self._write(line, deadline)
        reply = self._read_line(deadline)
        try:
            data = json.loads(reply)
        except ValueError as exc:
            raise ServerBroken(f"the server broke the protocol (bad JSON: {exc})") from exc
        if not isinstance(data, dict) or data.get("id") != self._next_id:
            raise ServerBroken("the server broke the protocol (reply to another request)")
        self.cpu_s = float(data.get("cpu_s") or 0.0)
        return data

    def _write(self, data: bytes, deadline: float) -> None:
        fd = self._proc.stdin.fileno()  # type: ignore[union-attr]
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise ServerBroken("the server stopped reading its requests", timed_out=True)
            try:
                view = view[os.write(fd, view[: 1 << 16]) :]
            except (BrokenPipeError, OSError) as exc:
                raise ServerBroken(f"the server is gone ({self._exit_note()})") from exc

    def _read_line(self, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buffer:
            if len(self._buffer) > self._max_line:
                raise ServerBroken(f"the server sent a reply over {self._max_line} bytes")
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise ServerBroken("time limit exceeded", timed_out=True)
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise ServerBroken(f"the server died ({self._exit_note()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _exit_note(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=1)
        code = self._proc.returncode
        how = "still running" if code is None else f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        self._stderr.seek(0)
        tail = self._stderr.read()[-600:].decode("utf-8", errors="replace").strip()
        hint = " (memory, CPU-time or file-size limit likely exceeded)" if code is not None and code < 0 else ""
        return how + hint + (f"; stderr: {tail}" if tail else "")

    def stop(self) -> None:
        """SIGKILL the process group (and with it the sandbox's PID namespace); safe from any thread, idempotent.

        Only while the leader is unreaped: a reaped pid (and its group id) may already belong to someone else.
        """
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """`stop`, reap, close the pipes, remove an unsandboxed scratch dir. Only by the thread that owns it."""
        self.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
