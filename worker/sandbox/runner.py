"""The tool server that runs INSIDE the sandbox: stdlib only, executed as `python -I -c <this file> <limits>`.

It applies its rlimits before reading any user code, then speaks line-delimited JSON: requests
on a private copy of stdin, replies on a private copy of stdout. Fds 0-2 are then pointed at
/dev/null and a capped memfd, so a tool that reads stdin or prints endlessly can never corrupt
the protocol (its prints come back per call, capped). Never imported by the worker.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import numbers
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

ERROR_CAP = 4096
"""Characters of an exception message (and 2x of its traceback) sent back."""


def apply_limits(limits: dict[str, Any]) -> None:
    """Hard rlimits (soft = hard, so user code cannot raise them back)."""
    pairs = [
        (resource.RLIMIT_AS, limits["memory_bytes"]),
        (resource.RLIMIT_CPU, limits["cpu_s"]),
        (resource.RLIMIT_NPROC, limits["processes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_FSIZE, limits["file_size_bytes"]),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in pairs:
        resource.setrlimit(which, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the file size limit a write fails (EFBIG), not the process


def start_bridge(port: int, socket_path: str) -> None:
    """127.0.0.1:`port` inside the sandbox -> the host proxy's unix socket: the tool's only way out.

    One thread relays every connection (threads count against the process limit). User code may
    bypass it and talk to the socket itself: the filtering happens on the host side of the socket.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    threading.Thread(target=_bridge_loop, args=(listener, socket_path), name="proxy-bridge", daemon=True).start()


def _bridge_loop(listener: socket.socket, socket_path: str) -> None:
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    peers: dict[socket.socket, socket.socket] = {}
    finished: set[socket.socket] = set()  # sides that sent EOF (half-closed: the other way may still flow)

    def drop(sock: socket.socket) -> None:
        for side in (sock, peers.get(sock)):
            if side is not None and side in peers:
                with contextlib.suppress(KeyError):  # a side that sent EOF is already unregistered
                    selector.unregister(side)
                peers.pop(side)
                finished.discard(side)
                side.close()

    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                with contextlib.suppress(OSError):
                    client, _ = listener.accept()
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        upstream.connect(socket_path)
                    except OSError:
                        client.close()
                        upstream.close()
                        continue
                    peers[client], peers[upstream] = upstream, client
                    selector.register(client, selectors.EVENT_READ)
                    selector.register(upstream, selectors.EVENT_READ)
                continue
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
                if data:
                    peers[sock].sendall(data)
                    continue
            except OSError:
                drop(sock)
                continue
            finished.add(sock)  # EOF: pass it on, and stop when both ways are done
            selector.unregister(sock)
            with contextlib.suppress(OSError):
                peers[sock].shutdown(socket.SHUT_WR)
            if peers[sock] in finished:
                drop(sock)


def take_protocol_fds() -> tuple[Any, int, int]:
    """Private copies of stdin/stdout for the protocol; fds 0-2 become /dev/null and a memfd capturing prints."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    capture = os.memfd_create("tool-output", 0)
    os.dup2(capture, 1)
    os.dup2(capture, 2)
    return requests, replies, capture


def take_output(capture: int, limit: int) -> str:
    """What the call printed (first `limit` bytes, then a marker), and reset the capture."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    size = os.fstat(capture).st_size
    data = os.pread(capture, limit, 0) if limit else b""
    os.ftruncate(capture, 0)
    os.lseek(capture, 0, os.SEEK_SET)
    text = data.decode("utf-8", errors="replace")
    return text + (f"\n...[output truncated: {size - limit} bytes over the limit]" if size > limit else "")


def cap_result(value: Any, limits: dict[str, Any]) -> tuple[Any, bool]:
    """A JSON-able value no longer than the result limit; longer ones become text cut with a visible marker."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        value = text = repr(value)
    encoded = text.encode("utf-8", errors="replace")
    cap = int(limits["result_bytes"])
    if len(encoded) <= cap:
        return value, False
    head = encoded[:cap].decode("utf-8", errors="ignore")
    return f"{head}...[truncated: {len(encoded) - cap} bytes over the {limits['result_label']} limit]", True


def check_reward(value: Any) -> float:
    """A reward must be a finite number (bools count as 0/1); anything else is an error, never a silent 0."""
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number):
            return number
        raise ValueError(f"the reward function returned {number!r}; it must return a finite float")
    raise TypeError(f"the reward function returned {type(value).__name__} ({value!r:.80}); it must return a float")


def load(source: str, function: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {"__name__": "studio_user_code", "__builtins__": builtins}
    exec(compile(source, "<user code>", "exec"), namespace)
    fn = namespace.get(function)
    if not callable(fn):
        raise NameError(f"function {function!r} is not defined by the source; define `def {function}(...)`")
    return fn  # type: ignore[no-any-return]


class ItemTimeout(Exception):
    """One item of a batch ran past its share of the time limit (raised by SIGALRM in the user code)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise ItemTimeout


def call_once(fn: Callable[..., Any], kind: str, arguments: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """Call the user function once → a reply (`ok`, `result`, `error`, `traceback`, `truncated`, `fatal`)."""
    reply: dict[str, Any] = {"ok": False, "result": None, "error": None, "truncated": False, "fatal": False}
    try:
        value = fn(**arguments)
        if kind == "reward":
            reply["result"] = check_reward(value)
        else:
            reply["result"], reply["truncated"] = cap_result(value, limits)
        reply["ok"] = True
    except MemoryError:
        mib = int(limits["memory_bytes"]) // (1024 * 1024)
        reply.update(error=f"MemoryError: the code exceeded its memory limit of {mib} MiB", fatal=True)
    except ItemTimeout:
        reply["error"] = f"time limit exceeded: the call ran longer than {limits['item_time_s']:g} s and was stopped"
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from user code are errors too
        reply["error"] = f"{type(exc).__name__}: {exc}"[:ERROR_CAP]
        reply["traceback"] = traceback.format_exc(limit=8)[-2 * ERROR_CAP :]
    return reply


def call_batch(state: dict[str, Any], items: list[dict[str, Any]], limits: dict[str, Any]) -> dict[str, Any]:
    """Every item in turn, each under its own time limit (SIGALRM; the host's deadline for the whole batch,
    items x limit, stops code that swallows the alarm). A memory error stops the batch: the rest are not run."""
    results: list[dict[str, Any]] = []
    fatal = False
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, arguments in enumerate(items):
        if fatal:
            results.append({"ok": False, "result": None, "error": f"not run: item {i - 1} broke the memory limit"})
            continue
        signal.setitimer(signal.ITIMER_REAL, float(limits["item_time_s"]))
        try:
            one = call_once(state["fn"], state["kind"], arguments, limits)
        except ItemTimeout:  # the alarm fired after the user code returned
            one = {"ok": False, "result": None, "error": "time limit exceeded", "fatal": False}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        fatal = bool(one.pop("fatal", False))
        results.append({k: one.get(k) for k in ("ok", "result", "error", "truncated")})
    return {"ok": True, "result": None, "error": None, "truncated": False, "fatal": fatal, "results": results}


def handle(request: dict[str, Any], state: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """One request → one reply (`ok`, `result`, `error`, `traceback`, `truncated`, `fatal`; a batch: `results`)."""
    try:
        if request["op"] == "load":
            state["fn"], state["kind"] = load(request["source"], request["function"]), request["kind"]
            return {"ok": True, "result": None, "error": None, "truncated": False, "fatal": False}
        if "fn" not in state:
            raise RuntimeError("no function is loaded in this server")
        if request["op"] == "call_batch":
            return call_batch(state, list(request["items"]), limits)
        return call_once(state["fn"], state["kind"], request["arguments"], limits)
    except BaseException as exc:  # a bad source at load time, or a request without a loaded function
        return {
            "ok": False,
            "result": None,
            "error": f"{type(exc).__name__}: {exc}"[:ERROR_CAP],
            "truncated": False,
            "fatal": False,
            "traceback": traceback.format_exc(limit=8)[-2 * ERROR_CAP :],
        }


def serve(limits: dict[str, Any]) -> None:
    apply_limits(limits)
    if limits.get("proxy_socket"):
        start_bridge(int(limits["proxy_port"]), str(limits["proxy_socket"]))
    requests, replies, capture = take_protocol_fds()
    state: dict[str, Any] = {}
    for line in requests:
        request = json.loads(line)
        reply = handle(request, state, limits)
        reply["id"] = request.get("id")
        reply["stdout"] = take_output(capture, int(limits["stdout_bytes"]))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        reply["cpu_s"] = usage.ru_utime + usage.ru_stime
        data = (json.dumps(reply, ensure_ascii=False, default=repr) + "\n").encode("utf-8", errors="replace")
        view = memoryview(data)
        while view:
            view = view[os.write(replies, view) :]


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
