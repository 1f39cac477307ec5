"""Start the studio's processes as children and stop them all, leaving no orphans.

Each child runs in its own session (process group), so stopping one also stops
whatever it forked (Celery pool processes, uvicorn workers). Children also get
SIGTERM from the kernel if this launcher dies without cleaning up (PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # pragma: no cover - runs in the forked child
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One supervised process."""

    name: str
    args: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Variables only this child gets (e.g. the API's per-launch probe token); kept for restarts."""


@dataclass
class Supervisor:
    """Owns the child processes of `studio up`."""

    env: Mapping[str, str]
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, args: Sequence[str], extra_env: Mapping[str, str] | None = None) -> Child:
        """Start a child with the shared env plus `extra_env` (a secret only this child may hold)."""
        child = Child(name=name, args=list(args), extra_env=dict(extra_env or {}))
        self._start(child)
        self.children.append(child)
        return child

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            list(child.args), env={**self.env, **child.extra_env}, stdin=subprocess.DEVNULL, preexec_fn=_child_setup
        )
        logger.info("started %s (pid %d)", child.name, child.process.pid)

    def restart(self, child: Child) -> None:
        """Start an exited child again with the same command (what its process group left is killed first)."""
        if child.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
        self._start(child)

    def first_exited(self) -> Child | None:
        """The first child that has exited, if any."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None

    def stop_all(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every process group, wait, then SIGKILL what is left."""
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            if child.process is None:
                continue
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", child.name)
            # The group may outlive its leader (e.g. Celery pool processes).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
        self.children.clear()
