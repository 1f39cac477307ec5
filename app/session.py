"""Per-browser-session API access: the signed-in user's token, never a shared one.

Gradio's login sets an access cookie; `UIGuard` binds that cookie to the API
token the login exchange returned (`SessionTokens`). `RequestClient` looks
like a `StudioClient` to the tabs, but each call runs with the token of the
browser session behind the current Gradio event, so two users never act as
each other and a request with no session reaches nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
from gradio.context import LocalContext

from app.client import StudioAPIError, StudioClient

logger = logging.getLogger(__name__)

ACCESS_COOKIE_PREFIX = "access-token"
"""Gradio names its login cookies `access-token-<id>` and `access-token-unsecure-<id>`."""
MAX_SESSIONS = 10_000


class SessionTokens:
    """Gradio access cookie → the API token of that browser session (in this process's memory only)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._tokens: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_sessions

    def bind(self, cookie: str, api_token: str) -> None:
        with self._lock:
            self._tokens[cookie] = api_token
            self._tokens.move_to_end(cookie)
            while len(self._tokens) > self._max:
                self._tokens.popitem(last=False)

    def token_for(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        with self._lock:
            return self._tokens.get(cookie)

    def drop(self, cookie: str | None) -> None:
        with self._lock:
            self._tokens.pop(cookie or "", None)

    def __len__(self) -> int:
        return len(self._tokens)


def access_cookie(cookies: dict[str, str]) -> str | None:
    """The Gradio login cookie's value among a request's cookies."""
    for name, value in cookies.items():
        if name.startswith(ACCESS_COOKIE_PREFIX):
            return value
    return None


class RequestClient:
    """A `StudioClient` stand-in whose every call acts as the signed-in user of the current Gradio event.

    With `require_login=False` (loopback, zero-setup) calls go out without a token.
    """

    def __init__(
        self,
        api_url: str,
        *,
        tokens: SessionTokens,
        require_login: bool,
        timeout_s: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.tokens = tokens
        self.require_login = require_login
        self._timeout_s = timeout_s
        self._transport = transport
        self._anonymous = StudioClient(api_url, timeout_s=timeout_s, transport=transport)
        self._clients: OrderedDict[str, StudioClient] = OrderedDict()
        self._lock = threading.Lock()

    def for_token(self, token: str) -> StudioClient:
        with self._lock:
            client = self._clients.get(token)
            if client is None:
                client = StudioClient(self.api_url, token=token, timeout_s=self._timeout_s, transport=self._transport)
                self._clients[token] = client
                while len(self._clients) > MAX_SESSIONS:
                    self._clients.popitem(last=False)[1].close()
            return client

    def current(self) -> StudioClient:
        """The client for the browser session behind the Gradio event being handled."""
        if not self.require_login:
            return self._anonymous
        request = LocalContext.request.get(None)
        cookies = dict(getattr(request, "cookies", None) or {}) if request is not None else {}
        token = self.tokens.token_for(access_cookie(cookies))
        if token is None:
            raise StudioAPIError("not signed in (or the session ended): reload the page and sign in", status_code=401)
        return self.for_token(token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)


class LoginHolder:
    """What the login callable learned during one `POST /login` (read back by `UIGuard`)."""

    def __init__(self, address: str | None = None) -> None:
        self.api_token: str | None = None
        self.address = address
        """The browser's address (forwarded to the API, whose lockouts count per name and address)."""
        self.locked: tuple[int, str] | None = None
        """(Retry-After seconds, message) when the API refused the sign-in for too many failures."""


def make_login(api_url: str, *, timeout_s: float = 15.0) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's `auth=` callable: name + password (or token) checked by the API's `POST /auth/login`."""
    from app.guard import CURRENT_LOGIN

    async def login(name: str, secret: str) -> bool:
        holder = CURRENT_LOGIN.get(None)
        if holder is None:
            logger.error("sign-in outside UIGuard: refusing (no browser session to bind the token to)")
            return False
        try:
            token = await anyio.to_thread.run_sync(_login_exchange, api_url, name, secret, timeout_s, holder.address)
        except StudioAPIError as exc:
            logger.info("sign-in refused for %r: %s", name, exc)
            if exc.status_code == 429:
                holder.locked = (exc.retry_after_s or 1, exc.detail)
            return False
        holder.api_token = token
        return True

    return login


def _login_exchange(api_url: str, name: str, secret: str, timeout_s: float, address: str | None) -> str:
    client = StudioClient(api_url, timeout_s=timeout_s)
    try:
        return client.login(name, secret, address=address).token
    finally:
        client.close()
