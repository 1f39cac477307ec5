"""Run browser-defined tool code in a separate, limited process (workers only, never the API).

The child is `python -I -c <runner>` in its own process group with: a wall-clock
limit (the whole group is killed), `RLIMIT_AS` memory cap, a scratch temp working
dir and a scrubbed environment (PATH and LANG only: no STUDIO_* vars, no DB URL).
The tool source and arguments travel over stdin as JSON; the result comes back on
stdout as JSON. This bounds runaway code; it is not a security boundary against a
determined attacker (no seccomp/namespaces) - deploy workers accordingly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_RUNNER = r"""
import json, sys, traceback
payload = json.loads(sys.stdin.read())
out = {"ok": False, "result": None, "error": None}
try:
    namespace = {"__name__": "studio_tool"}
    exec(compile(payload["source"], "<tool>", "exec"), namespace)
    fn = namespace.get(payload["function"])
    if not callable(fn):
        raise NameError(f"function {payload['function']!r} is not defined by the tool source")
    value = fn(**payload["arguments"])
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        value = repr(value)
    out.update(ok=True, result=value)
except MemoryError:
    out["error"] = "MemoryError: the tool exceeded its memory limit"
except BaseException as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
    out["traceback"] = traceback.format_exc(limit=5)
sys.stdout.write("\n__STUDIO_RESULT__" + json.dumps(out))
"""

MAX_OUTPUT_CHARS = 64_000
"""Captured stdout/stderr beyond this is cut (the tool's own prints)."""


@dataclass(frozen=True)
class SandboxLimits:
    time_limit_s: float = 10.0
    """Wall-clock seconds before the process group is killed."""
    memory_limit_mb: int = 512
    """Address-space cap (RLIMIT_AS) of the child, in MiB."""

    def __post_init__(self) -> None:
        if self.time_limit_s <= 0:
            raise ValueError("time_limit_s must be > 0 (e.g. 10)")
        if self.memory_limit_mb < 32:
            raise ValueError("memory_limit_mb must be >= 32; the interpreter alone needs ~20 MiB")


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    """True when the function returned normally."""
    result: Any
    """Its JSON-able return value (repr() when not JSON-able)."""
    error: str | None
    """What went wrong: the exception, a time limit, a memory limit, a crash."""
    duration_s: float
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "result": self.result, "error": self.error, "duration_s": self.duration_s,
                "stdout": self.stdout, "stderr": self.stderr}  # fmt: skip


def scrubbed_env() -> dict[str, str]:
    """Only PATH and LANG survive into the child."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8")}


def _limit_memory(memory_limit_mb: int) -> Any:
    def preexec() -> None:
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return preexec


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _parse(stdout: str, stderr: str, returncode: int, duration_s: float, limits: SandboxLimits) -> SandboxResult:
    own_output, marker, tail = stdout.rpartition("\n__STUDIO_RESULT__")
    if not marker:
        hint = "memory limit likely exceeded" if returncode < 0 or "MemoryError" in stderr else "it crashed"
        error = f"the tool process exited with code {returncode} before returning ({hint}); " \
                f"limit {limits.memory_limit_mb} MiB"  # fmt: skip
        return SandboxResult(False, None, error, duration_s, stdout[-MAX_OUTPUT_CHARS:], stderr[-MAX_OUTPUT_CHARS:])
    out = json.loads(tail)
    return SandboxResult(
        ok=bool(out["ok"]), result=out["result"], error=out["error"], duration_s=duration_s,
        stdout=own_output[-MAX_OUTPUT_CHARS:], stderr=(stderr + out.get("traceback", ""))[-MAX_OUTPUT_CHARS:],
    )  # fmt: skip


def run_tool_source(
    source: str, function: str, arguments: dict[str, Any], limits: SandboxLimits | None = None
) -> SandboxResult:
    """Call `function(**arguments)` defined by `source` in a limited child process."""
    limits = limits or SandboxLimits()
    payload = json.dumps({"source": source, "function": function, "arguments": arguments})
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="studio-tool-") as scratch:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _RUNNER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=scratch, env=scrubbed_env(), start_new_session=True,
            preexec_fn=_limit_memory(limits.memory_limit_mb),
        )  # fmt: skip
        try:
            stdout, stderr = proc.communicate(payload, timeout=limits.time_limit_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            duration = time.monotonic() - start
            error = f"time limit exceeded: the tool ran longer than {limits.time_limit_s:g} s and was stopped"
            return SandboxResult(False, None, error, duration)
    duration = time.monotonic() - start
    logger.info("tool %s finished in %.3f s (exit %s)", function, duration, proc.returncode)
    return _parse(stdout, stderr, proc.returncode, duration, limits)
