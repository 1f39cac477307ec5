"""The host-side filtering forward proxy that is a networked tool's only way out of its sandbox.

A tool with a network allow-list still runs in its own network namespace (no route anywhere);
the sandbox gets this proxy's unix socket, bridged to 127.0.0.1:3128 inside (`HTTP(S)_PROXY`).
The proxy answers HTTP `CONNECT host:port` (HTTPS and any TCP) and plain `http://` requests,
and refuses every host not on that tool's list. It resolves names itself and refuses addresses
that are not public (loopback, private, link-local such as cloud metadata) unless the worker
setting `STUDIO_TOOL_NETWORK_ALLOW_PRIVATE=1` allows them, so the list cannot reach the API or Redis.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import socket
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from backend.hosts import parse_host_entry

logger = logging.getLogger(__name__)

HEAD_LIMIT = 16 * 1024
"""Largest request line + headers the proxy reads before it answers 431."""
MAX_CONNECTIONS = 16
"""Concurrent connections one tool's proxy relays; more get 503 (each holds two sockets and a thread)."""
DEFAULT_PORTS = (80, 443)
"""The ports an entry without `:port` allows."""
FIX_HINT = "add it to this tool's network allow-list in the environment (Environments tab, 'Tool network')"


class ProxyRefusal(Exception):
    """A request the proxy will not relay: `status` and a message the tool sees in the response body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AllowList:
    """`host`, `host:port`, `*.domain[:port]`; a host without a port allows ports 80 and 443 only."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = tuple(entries)
        self._rules = [parse_host_entry(entry) for entry in entries]  # ValueError names a bad entry

    def allows(self, host: str, port: int) -> bool:
        host = host.strip("[]").lower().rstrip(".")
        for pattern, allowed_port in self._rules:
            ports = DEFAULT_PORTS if allowed_port is None else (allowed_port,)
            if port not in ports:
                continue
            if pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return True
        return False


def check_hosts(entries: Sequence[str]) -> list[str]:
    """The entries normalised (lowercase, stripped); ValueError naming the first bad one."""
    for entry in entries:
        parse_host_entry(entry)
    return [entry.strip().lower() for entry in entries]


class NetworkProxy:
    """One tool's proxy: `start()` binds a private unix socket (`socket_path`), `close()` ends every relay."""

    def __init__(self, hosts: Sequence[str], *, allow_private: bool = False, connect_timeout_s: float = 10.0) -> None:
        self.allow = AllowList(hosts)
        self.allow_private = allow_private
        self.connect_timeout_s = connect_timeout_s
        self._dir = tempfile.mkdtemp(prefix="studio-proxy-")  # 0700: only the worker (and the sandbox's bind) reach it
        self.socket_path = str(Path(self._dir) / "proxy.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.refused = 0
        """Requests refused (a host off the list, a private address, a malformed request)."""

    def start(self) -> NetworkProxy:
        self._listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o666)  # the sandbox uid (nobody) must connect; the 0700 dir keeps others out
        self._listener.listen(64)
        threading.Thread(target=self._accept_loop, name="tool-proxy", daemon=True).start()
        return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = [self._listener, *self._open]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                self._reply(client, 503, f"too many connections (at most {MAX_CONNECTIONS} at once)")
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), name="tool-proxy-conn", daemon=True).start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._open.add(sock)
            return True

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if not self._track(client):
                return
            client.settimeout(self.connect_timeout_s)
            head, rest = _read_head(client)
            upstream, first = self._open_upstream(head)
            if not self._track(upstream):
                return
            if first is None:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(first)
            if rest:
                upstream.sendall(rest)
            _relay(client, upstream)
        except ProxyRefusal as exc:
            self.refused += 1
            logger.info("tool proxy refused a request: %s", exc)
            self._reply(client, exc.status, str(exc))
        except OSError as exc:
            self._reply(client, 502, f"the proxy could not reach the host: {exc}")
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._open.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()
            self._slots.release()

    def _open_upstream(self, head: bytes) -> tuple[socket.socket, bytes | None]:
        """The connection to the requested host (checked) and, for plain HTTP, the request to send first."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ProxyRefusal(400, "malformed request line")
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _host_port(target, None)
            return self._connect(host, port), None
        if not target.lower().startswith("http://"):
            raise ProxyRefusal(400, "only CONNECT and absolute http:// requests are proxied (set HTTP(S)_PROXY)")
        authority, _, path = target[len("http://") :].partition("/")
        host, port = _host_port(authority, 80)
        kept = [h for h in lines[1:] if h and not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))]
        request = "\r\n".join([f"{method} /{path} {version}", *kept, "Connection: close", "", ""])
        return self._connect(host, port), request.encode("latin-1")

    def _connect(self, host: str, port: int) -> socket.socket:
        if not self.allow.allows(host, port):
            raise ProxyRefusal(403, f"{host}:{port} is not on this tool's network allow-list; {FIX_HINT}")
        try:
            infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ProxyRefusal(502, f"{host} does not resolve: {exc}") from exc
        for family, kind, proto, _name, address in infos:
            ip = ipaddress.ip_address(address[0])
            if not ip.is_global and not self.allow_private:
                hint = "a worker may allow private and loopback addresses with STUDIO_TOOL_NETWORK_ALLOW_PRIVATE=1"
                raise ProxyRefusal(403, f"{host} resolves to {ip}, not a public address; {hint}")
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.connect_timeout_s)
            try:
                sock.connect(address)  # the address just checked, not a second lookup (no rebinding in between)
            except OSError:
                sock.close()
                continue
            return sock
        raise ProxyRefusal(502, f"could not connect to {host}:{port}")

    @staticmethod
    def _reply(client: socket.socket, status: int, message: str) -> None:
        reason = {
            400: "Bad Request",
            403: "Forbidden",
            431: "Request Header Fields Too Large",
            502: "Bad Gateway",
            503: "Service Unavailable",
        }.get(status, "Error")
        body = (message + "\n").encode()
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        with contextlib.suppress(OSError):
            client.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)


def _host_port(authority: str, default: int | None) -> tuple[str, int]:
    try:
        host, port = parse_host_entry(authority)
    except ValueError as exc:
        raise ProxyRefusal(400, str(exc)) from exc
    if port is None and default is None:
        raise ProxyRefusal(400, f"CONNECT {authority!r} needs host:port")
    return host, int(port if port is not None else default)  # type: ignore[arg-type]


def _read_head(client: socket.socket) -> tuple[bytes, bytes]:
    """The request line and headers, and whatever body bytes came with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            raise ProxyRefusal(431, f"request headers over {HEAD_LIMIT} bytes")
        chunk = client.recv(4096)
        if not chunk:
            raise ProxyRefusal(400, "the connection closed before the request was complete")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _relay(a: socket.socket, b: socket.socket, idle_s: float = 300.0) -> None:
    """Copy bytes both ways until both sides are done (or nothing moves for `idle_s`)."""
    a.settimeout(None)
    b.settimeout(None)
    peers = {a: b, b: a}
    open_reads = {a, b}
    while open_reads:
        ready, _, _ = select.select(list(open_reads), [], [], idle_s)
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(65536)
                if data:
                    peers[sock].sendall(data)
            except OSError:
                return  # a side reset the connection: drop both
            if not data:
                open_reads.discard(sock)
                with contextlib.suppress(OSError):
                    peers[sock].shutdown(socket.SHUT_WR)
