"""Long-lived sandboxed servers for user tools and reward functions, and the one-shot `run_tool_source`.

`ToolServerPool` keeps up to `processes` servers per key (one user function each), started
lazily and reused: a call takes an idle server, so concurrent calls (a turn's episodes) spread
over the processes; `call_batch` sends many calls (a reward term's step) in one request. A call
past its wall-clock limit kills its server; a crashed server, or one that broke a limit, is
replaced on the next call. Every failure is a `SandboxResult` with an
error, never an exception, and is counted in `stats(key)`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from worker.sandbox.bwrap import isolation_mode
from worker.sandbox.limits import SandboxLimits, SandboxResult, ToolAccess, ToolLoadError, size_label
from worker.sandbox.proxy import NetworkProxy
from worker.sandbox.server import ArgumentsTooLarge, ServerBroken, ToolServer

logger = logging.getLogger(__name__)

STARTUP_GRACE_S = 20.0
"""Seconds a server may take to start and load its source, on top of the call limit (busy 2-core hosts)."""
CPU_RECYCLE_FRACTION = 0.8
"""A server that has used this share of its CPU-time limit is replaced after its call (or sooner, see below)."""


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class ToolStats:
    """Counters of one key in a pool (as `tool/<name>/...` metrics)."""

    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    restarts: int = 0
    truncated: int = 0


@dataclass
class _Entry:
    source: str
    function: str
    kind: str
    idle: queue.LifoQueue[list[ToolServer | None]]
    stats: ToolStats = field(default_factory=ToolStats)
    access: ToolAccess | None = None
    proxy: NetworkProxy | None = None
    """The tool's filtering proxy (one per allow-listed tool, shared by its servers), closed with the pool."""


class ToolServerPool:
    """`add_tool` / `add_function` once per key, then `call(key, arguments)` from any thread; `close()` at the end."""

    def __init__(self, limits: SandboxLimits | None = None, processes: int | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.processes = processes or available_cores()
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        self.mode = isolation_mode(self.limits)  # raises SandboxUnavailable: refuse before any user code runs
        self._bwrap = shutil.which(self.limits.bwrap_path) if self.mode == "bwrap" else None
        self._entries: dict[str, _Entry] = {}
        self._servers: set[ToolServer] = set()
        # Replace a server before RLIMIT_CPU could kill it mid-call: a call may burn up to 2 cores x its time limit
        # (CPU accounting is tick-sampled, so leave that margin as well as the fraction).
        cpu_limit = self.limits.cpu_time_limit_s
        self._cpu_recycle_s = min(CPU_RECYCLE_FRACTION * cpu_limit, cpu_limit - 2 * self.limits.time_limit_s)
        self._lock = threading.Lock()
        self._closed = False

    def add_tool(self, key: str, source: str, function: str, access: ToolAccess | None = None) -> None:
        """A user tool: `function(**arguments)` returns any JSON value (repr() otherwise), capped in size.

        `access`: the hosts it may reach (through its own filtering proxy) and the files mounted
        read-only at /data/<name>; none by default.
        """
        self._add(key, source, function, "tool", access)

    def add_function(self, key: str, source: str, function: str) -> None:
        """A user reward function: `function(**kwargs)` must return a finite number (else an error result)."""
        self._add(key, source, function, "reward")

    def _add(self, key: str, source: str, function: str, kind: str, access: ToolAccess | None = None) -> None:
        if not key or not function.isidentifier():
            raise ValueError(f"a pool entry needs a key and a Python function name, got {key!r} and {function!r}")
        access = None if access is None or access.is_default else access
        if access is not None:
            check_files(access, self.mode, self.limits.sandbox_uid)
        idle: queue.LifoQueue[list[ToolServer | None]] = queue.LifoQueue()
        for _ in range(self.processes):
            idle.put([None])
        entry = _Entry(source, function, kind, idle, access=access)
        with self._lock:
            if self._closed:
                raise RuntimeError("this ToolServerPool is closed")
            if key in self._entries:
                raise ValueError(f"{key!r} is already in this pool; use a new key for a new version")
            self._entries[key] = entry
        if access is not None and access.hosts:
            if self.mode == "bwrap":
                entry.proxy = NetworkProxy(access.hosts, allow_private=self.limits.network_allow_private).start()
            else:
                logger.warning("tool %s: no sandbox, so its network allow-list is NOT enforced", key)
        slot = entry.idle.get()
        try:
            slot[0] = self._start(entry)  # load once now: a broken source fails here, with its error
        except ToolLoadError:
            with self._lock:
                del self._entries[key]
            if entry.proxy is not None:
                entry.proxy.close()
            raise
        finally:
            entry.idle.put(slot)

    def _start(self, entry: _Entry) -> ToolServer:
        with self._lock:
            if self._closed:
                raise ToolLoadError("this ToolServerPool is closed")
            try:
                proxy_socket = entry.proxy.socket_path if entry.proxy is not None else None
                server = ToolServer(self.limits, self.mode, self._bwrap, entry.access, proxy_socket)
            except OSError as exc:
                raise ToolLoadError(f"the sandbox could not be started: {exc}") from exc
            self._servers.add(server)
        try:
            reply = server.request(
                {"op": "load", "source": entry.source, "function": entry.function, "kind": entry.kind},
                self.limits.time_limit_s + STARTUP_GRACE_S,
            )
        except ServerBroken as exc:
            self._kill(server)
            raise ToolLoadError(f"loading {entry.function!r} in the sandbox failed: {exc}") from exc
        if not reply.get("ok"):
            self._kill(server)
            raise ToolLoadError(f"loading {entry.function!r} failed: {reply.get('error')}")
        return server

    def _kill(self, server: ToolServer) -> None:
        server.kill()
        with self._lock:
            self._servers.discard(server)

    def _count(self, entry: _Entry, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(entry.stats, name, getattr(entry.stats, name) + delta)

    def _entry(self, key: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if self._closed:
                raise RuntimeError("this ToolServerPool is closed")
        if entry is None:
            raise KeyError(f"no function {key!r} in this pool; add it with add_tool/add_function first")
        return entry

    def __call__(self, key: str, arguments: dict[str, Any]) -> SandboxResult:
        """The pool is the RL core's tool runner: `runner(key, arguments)` is `call`."""
        return self.call(key, arguments)

    def call(self, key: str, arguments: dict[str, Any]) -> SandboxResult:
        """Call the key's function with keyword `arguments`; every failure comes back as an error result."""
        entry = self._entry(key)
        start = time.monotonic()
        if not _is_arguments(arguments):
            result = _error(start, f"arguments must be an object of named values, got {arguments!r:.200}")
        else:
            reply = self._in_slot(entry, {"op": "call", "arguments": arguments}, self.limits.time_limit_s, start)
            result = reply if isinstance(reply, SandboxResult) else _result(reply, start)
        self._count(entry, calls=1, truncated=int(result.truncated), errors=int(not result.ok))
        return result

    def call_batch(self, key: str, items: list[dict[str, Any]]) -> list[SandboxResult]:
        """Call the key's function once per item in ONE request to one server (a reward term's whole step).

        Time limit: each item gets the pool's per-call limit inside the server (an item past it fails alone);
        the request as a whole gets items x that limit, past which the server is killed and every item not
        answered fails. Items whose arguments are not an object, or exceed `argument_limit_bytes`, fail alone.
        """
        entry = self._entry(key)
        start = time.monotonic()
        results: list[SandboxResult | None] = [None] * len(items)
        sent: list[int] = []
        for i, arguments in enumerate(items):
            problem = _argument_problem(arguments, self.limits.argument_limit_bytes)
            if problem is None:
                sent.append(i)
            else:
                results[i] = _error(start, problem)
        if sent:
            payload = {"op": "call_batch", "items": [items[i] for i in sent]}
            reply = self._in_slot(entry, payload, self.limits.time_limit_s * len(sent), start)
            replies = reply.get("results") if isinstance(reply, dict) else None
            per_item = (time.monotonic() - start) / len(sent)
            for n, i in enumerate(sent):
                if isinstance(reply, SandboxResult):
                    results[i] = reply
                elif not isinstance(replies, list) or len(replies) != len(sent) or not isinstance(replies[n], dict):
                    results[i] = _error(start, "the sandboxed server broke the batch protocol")
                else:
                    results[i] = _result(replies[n], start, duration_s=per_item)
        done = [r for r in results if r is not None]
        self._count(
            entry, calls=len(done), truncated=sum(r.truncated for r in done), errors=sum(not r.ok for r in done)
        )
        return done

    def _in_slot(
        self, entry: _Entry, payload: dict[str, Any], timeout_s: float, start: float
    ) -> dict[str, Any] | SandboxResult:
        slot = entry.idle.get()
        try:
            return self._request_in(entry, slot, payload, timeout_s, start)
        finally:
            if self._closed and slot[0] is not None:  # closed while this call ran: clean up here
                self._kill(slot[0])
                slot[0] = None
            entry.idle.put(slot)

    def call_many(self, key: str, arguments: list[dict[str, Any]]) -> list[SandboxResult]:
        """`call` for each argument set, concurrently over the key's processes, results in order."""
        with ThreadPoolExecutor(max_workers=self.processes) as executor:
            return list(executor.map(lambda args: self.call(key, args), arguments))

    def _request_in(
        self, entry: _Entry, slot: list[ToolServer | None], payload: dict[str, Any], timeout_s: float, start: float
    ) -> dict[str, Any] | SandboxResult:
        """The server's reply to `payload`, or an error result (a crash, a timeout, bad arguments)."""
        server = slot[0]
        if server is None or not server.alive:
            if server is not None:
                self._kill(server)
                self._count(entry, restarts=1)
            try:
                server = slot[0] = self._start(entry)
            except ToolLoadError as exc:
                slot[0] = None
                return _error(start, f"the sandboxed server could not start: {exc}")
        try:
            reply = server.request(payload, timeout_s)
        except ServerBroken as exc:
            self._kill(server)
            slot[0] = None
            self._count(entry, restarts=1, timeouts=int(exc.timed_out))
            if exc.timed_out:
                return _error(start, f"time limit exceeded: the call ran longer than {timeout_s:g} s and was stopped")
            return _error(start, f"the sandboxed code crashed: {exc}")
        except ArgumentsTooLarge as exc:
            return _error(start, str(exc))
        except (TypeError, ValueError) as exc:  # arguments that are not JSON
            return _error(start, f"arguments must be JSON values: {exc}")
        if reply.get("fatal") or server.cpu_s > self._cpu_recycle_s:
            self._kill(server)  # a broken limit leaves no half-usable interpreter behind; the next starts afresh
            slot[0] = None
            self._count(entry, restarts=1)
        return reply

    def stats(self, key: str) -> ToolStats:
        """A copy of the key's counters."""
        with self._lock:
            entry = self._entries[key]
        return ToolStats(**vars(entry.stats))

    def close(self) -> None:
        """Kill every server (and its namespace). Idempotent; calls in flight get an error, later calls raise."""
        with self._lock:
            self._closed = True
            servers = list(self._servers)
            entries = list(self._entries.values())
        for server in servers:
            server.stop()  # in-flight calls see their server die and clean it up in their own thread
        for entry in entries:
            idle = []
            while True:
                try:
                    idle.append(entry.idle.get_nowait())
                except queue.Empty:
                    break
            for slot in idle:
                if slot[0] is not None:
                    self._kill(slot[0])
                    slot[0] = None
                entry.idle.put(slot)  # emptied, so a caller still waiting for a slot gets an error, not a hang
            if entry.proxy is not None:
                entry.proxy.close()

    def __enter__(self) -> ToolServerPool:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def check_files(access: ToolAccess, mode: str, sandbox_uid: int) -> None:
    """Each declared file is a regular file the sandboxed user can read; ToolLoadError saying how to fix it."""
    for name, path in access.files:
        resolved = Path(path)
        if not resolved.is_absolute() or not resolved.is_file():
            raise ToolLoadError(
                f"file {name!r}: {path} is not an existing file (re-upload it, or remove it from the tool's files)"
            )
        if mode == "bwrap" and os.geteuid() == 0 and not resolved.stat().st_mode & stat.S_IROTH:
            raise ToolLoadError(
                f"file {name!r}: {path} is not readable by the sandbox user (uid {sandbox_uid}): `chmod o+r {path}`"
            )


def _error(start: float, error: str) -> SandboxResult:
    return SandboxResult(ok=False, result=None, error=error, duration_s=time.monotonic() - start)


def _result(reply: dict[str, Any], start: float, duration_s: float | None = None) -> SandboxResult:
    return SandboxResult(
        ok=bool(reply.get("ok")),
        result=reply.get("result"),
        error=reply.get("error"),
        duration_s=time.monotonic() - start if duration_s is None else duration_s,
        stdout=str(reply.get("stdout") or ""),
        stderr=str(reply.get("traceback") or ""),
        truncated=bool(reply.get("truncated")),
    )


def _is_arguments(arguments: Any) -> bool:
    return isinstance(arguments, dict) and all(isinstance(k, str) for k in arguments)


def _argument_problem(arguments: Any, limit_bytes: int) -> str | None:
    """Why one batch item cannot be sent (not an object, not JSON, over the size limit), else None."""
    if not _is_arguments(arguments):
        return f"arguments must be an object of named values, got {arguments!r:.200}"
    try:
        size = len(json.dumps(arguments, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        return f"arguments must be JSON values: {exc}"
    if size > limit_bytes:
        return f"the arguments are {size} bytes as JSON, over the {size_label(limit_bytes)} limit"
    return None


def run_tool_source(
    source: str,
    function: str,
    arguments: dict[str, Any],
    limits: SandboxLimits | None = None,
    access: ToolAccess | None = None,
) -> SandboxResult:
    """Call `function(**arguments)` defined by `source` once, in a fresh sandbox that is gone afterwards."""
    start = time.monotonic()
    with ToolServerPool(limits, processes=1) as pool:
        try:
            pool.add_tool("tool", source, function, access)
        except ToolLoadError as exc:
            return SandboxResult(ok=False, result=None, error=str(exc), duration_s=time.monotonic() - start)
        result = pool.call("tool", arguments)
    logger.info("tool %s finished in %.3f s (ok=%s)", function, time.monotonic() - start, result.ok)
    return result
