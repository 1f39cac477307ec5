"""ASGI guard in front of every API route: body-size cap, Host-header check, CSRF check.

Pure ASGI (no `BaseHTTPMiddleware`): a declared Content-Length over the cap is
refused at once, a chunked body is read up to the cap before the route sees
it, and a refused request never reaches a route. It also records on the
scope whether the request arrived over a non-loopback interface (the actual
bind, not the setting: `uvicorn --host 0.0.0.0` is caught), for the auth check.
"""

from __future__ import annotations

import json
import logging

import psutil
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core.config import Settings
from backend.core.security import CLIENT_HEADER, UNSAFE_METHODS, auth_required, host_allowed
from backend.hosts import is_loopback_address, same_origin

logger = logging.getLogger(__name__)

PUBLIC_SCOPE_KEY = "studio.public"


def listens_beyond_loopback(port: int) -> bool:
    """True when this process has a listening socket on `port` bound to a non-loopback or wildcard address."""
    try:
        conns = psutil.Process().net_connections(kind="inet")
    except (psutil.Error, OSError):
        logger.warning("cannot list this process's sockets; treating the bind as public")
        return True
    for conn in conns:
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        if listening and not is_loopback_address(conn.laddr.ip):
            return True
    return False


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class StudioGuard:
    """Refuses oversized bodies (413), foreign Host headers (400) and cross-site writes (403)."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._public_ports: dict[int, bool] = {}

    def is_public(self, scope: Scope) -> bool:
        server = scope.get("server")
        if not server:
            return False  # a unix socket: guarded by the data dir's permissions
        host, port = server[0], server[1]
        if not is_loopback_address(str(host)):
            return True
        if port not in self._public_ports:
            self._public_ports[port] = listens_beyond_loopback(int(port))
        return self._public_ports[port]

    def _check(self, scope: Scope, headers: dict[str, str], public: bool) -> tuple[int, str] | None:
        host = headers.get("host", "")
        needs_host_check = not auth_required(self.settings, public=public) or self.settings.extra_allowed_hosts
        if needs_host_check and not host_allowed(host, self.settings):
            return 400, (
                f"Host {host!r} is not one this studio answers to (DNS-rebinding guard); use 127.0.0.1 or "
                "localhost, or list the name in STUDIO_ALLOWED_HOSTS"
            )
        if scope["method"] not in UNSAFE_METHODS:
            return None
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site request refused (CSRF guard)"
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, host):
            return 403, f"request from origin {origin!r} refused (CSRF guard): it is not this studio's origin"
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if CLIENT_HEADER not in headers and "authorization" not in headers and content_type != "application/json":
            return 403, (
                "state-changing requests need a JSON body or the header 'X-Studio-Client: 1' (CSRF guard); "
                "the studio's own clients send it"
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        public = self.is_public(scope)
        scope[PUBLIC_SCOPE_KEY] = public
        refusal = self._check(scope, headers, public)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, f"request body of {declared} bytes is over the {limit}-byte limit")
            return
        if declared.isdigit():  # the server holds the body to its declared length
            await self.app(scope, receive, send)
            return
        await self._call_buffered(scope, receive, send, limit)

    async def _call_buffered(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """A body without Content-Length (chunked): read it up to `limit` (413 beyond), then replay it."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await _refuse(send, 413, f"request body is over the {limit}-byte limit")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
