"""ASGI guard in front of the Gradio app: Host check, cross-site refusal, and the login → token binding.

A DNS-rebinding page on loopback sends a foreign Host header; a cross-site
page sends a foreign Origin (or `Sec-Fetch-Site: cross-site`). Both are
refused before Gradio sees them, so neither can drive `save_tool` or
`test_tool`. The guard also binds the Gradio login cookie to the API token
the login exchange returned, and drops it on logout.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from http.cookies import SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.session import ACCESS_COOKIE_PREFIX, LoginHolder, SessionTokens, access_cookie
from backend.hosts import is_loopback_address, same_origin, split_host

logger = logging.getLogger(__name__)

CURRENT_LOGIN: ContextVar[LoginHolder | None] = ContextVar("studio_current_login", default=None)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


LOGIN_NOTICE_SCRIPT = (
    "<script>(()=>{const f=window.fetch;window.fetch=async(...a)=>{const r=await f(...a);try{"
    "const u=new URL(String(a[0]&&a[0].url||a[0]),location.href);"
    "if(r.status===429&&/\\/login\\/?$/.test(u.pathname)){const d=await r.clone().json();"
    "let b=document.getElementById('studio-login-notice');if(!b){b=document.createElement('div');"
    "b.id='studio-login-notice';b.setAttribute('role','alert');b.style.cssText='position:fixed;top:1rem;"
    "left:50%;transform:translateX(-50%);z-index:9999;padding:.75rem 1rem;border-radius:.5rem;"
    "background:#fee2e2;color:#7f1d1d;font:14px sans-serif;max-width:40rem';document.body.appendChild(b);}"
    "b.textContent='Sign-in locked: '+d.detail;}}catch(e){}return r;};})();</script>"
)
"""Gradio's login page shows only "Incorrect credentials" (on 400); this shows a lockout's own message (429)."""


async def _refuse(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UIGuard:
    """Refuses foreign Hosts (400), cross-site writes (403) and, without login, non-loopback arrivals (403)."""

    def __init__(
        self, app: ASGIApp, *, tokens: SessionTokens, require_login: bool, allowed_hosts: list[str] | tuple[str, ...]
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.require_login = require_login
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        server = scope.get("server")
        if not self.require_login and server and not is_loopback_address(str(server[0])):
            return 403, "this UI has no sign-in and is only served on loopback: set STUDIO_REQUIRE_AUTH=1"
        host = headers.get("host", "")
        name, _port = split_host(host)
        known = is_loopback_address(name) or name in self.allowed_hosts
        if (not self.require_login or self.allowed_hosts) and not known:
            return 400, f"Host {host!r} is not one this studio answers to (DNS-rebinding guard)"
        if scope.get("method", "GET") in UNSAFE_METHODS or scope["type"] == "websocket":
            if headers.get("sec-fetch-site") == "cross-site":
                return 403, "cross-site request refused (CSRF guard)"
            origin = headers.get("origin")
            if origin is not None and not same_origin(origin, host):
                return 403, f"request from origin {origin!r} refused (CSRF guard)"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _refuse(send, *refusal)
            return
        path = scope.get("path", "").rstrip("/")
        if path.endswith("/logout"):
            self.tokens.drop(access_cookie(_cookies(headers)))
        if scope.get("method") == "POST" and path.endswith("/login"):
            await self._login(scope, receive, send)
            return
        if self.require_login and scope["type"] == "http" and scope.get("method") == "GET":
            await self.app(scope, receive, _with_login_notice(send))
            return
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run Gradio's login; on success bind the access cookie it sets to the API token the exchange got."""
        client = scope.get("client")
        holder = LoginHolder(address=str(client[0]) if client else None)
        reset = CURRENT_LOGIN.set(holder)
        replaced = False

        async def binding_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # Gradio's own "Incorrect credentials" body: the lockout answer went instead
            if message["type"] == "http.response.start" and holder.locked is not None:
                replaced = True
                wait_s, detail = holder.locked
                await _refuse(send, 429, detail, [(b"retry-after", str(wait_s).encode())])
                return
            if message["type"] == "http.response.start" and holder.api_token:
                for key, value in message.get("headers", []):
                    if key.lower() == b"set-cookie":
                        cookie = _cookie_value(value.decode("latin-1"))
                        if cookie:
                            self.tokens.bind(cookie, holder.api_token)
            await send(message)

        try:
            await self.app(scope, receive, binding_send)
        finally:
            CURRENT_LOGIN.reset(reset)


def _with_login_notice(send: Send) -> Send:
    """`send` that adds `LOGIN_NOTICE_SCRIPT` to uncompressed HTML pages (the login page among them)."""
    state: dict[str, Any] = {"start": None, "chunks": []}

    async def injecting_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = {k.lower(): v for k, v in message.get("headers", [])}
            html = headers.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in headers
            if not html:
                await send(message)
                return
            state["start"] = message
            return
        if message["type"] != "http.response.body" or state["start"] is None:
            await send(message)
            return
        state["chunks"].append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(state["chunks"])
        body = body.replace(b"</head>", LOGIN_NOTICE_SCRIPT.encode() + b"</head>", 1)
        start = state["start"]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return injecting_send


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header: no session
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def _cookie_value(set_cookie: str) -> str | None:
    name, _, rest = set_cookie.partition("=")
    if not name.strip().startswith(ACCESS_COOKIE_PREFIX):
        return None
    return rest.split(";", 1)[0].strip() or None


def middleware_kwargs(tokens: SessionTokens, *, require_login: bool, allowed_hosts: list[str]) -> dict[str, Any]:
    """`app_kwargs` for `Blocks.launch`: installs `UIGuard` on Gradio's own FastAPI app."""
    from starlette.middleware import Middleware

    guard = Middleware(UIGuard, tokens=tokens, require_login=require_login, allowed_hosts=allowed_hosts)
    return {"middleware": [guard]}
