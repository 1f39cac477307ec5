"""Login exchange and `whoami`: name + password (or token) in, a bearer token for the session out."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request

from backend.api.deps import PrincipalDep, SessionDep, SettingsDep
from backend.core.login_limits import LoginLimiter
from backend.core.security import LOGIN_ADDRESS_HEADER, legacy_token_matches
from backend.crud import users as users_crud
from backend.hosts import is_loopback_address
from backend.schemas.user import LoginPublic, LoginRequest, Principal

router = APIRouter(prefix="/auth", tags=["auth"])


def client_address(request: Request) -> str:
    """Who is signing in: the peer, or the browser's address the studio's UI forwards from loopback."""
    peer = request.client.host if request.client is not None else "unknown"
    forwarded = request.headers.get(LOGIN_ADDRESS_HEADER, "").strip()
    return forwarded[:64] if forwarded and is_loopback_address(peer) else peer


def limiter_of(request: Request) -> LoginLimiter:
    limiter: LoginLimiter | None = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        limiter = request.app.state.login_limiter = LoginLimiter.from_settings(request.app.state.settings)
    return limiter


def _locked(wait_s: int) -> HTTPException:
    minutes = f"{wait_s} s" if wait_s < 120 else f"{math.ceil(wait_s / 60)} min"
    return HTTPException(
        status_code=429,
        headers={"Retry-After": str(wait_s)},
        detail=f"too many failed sign-ins for this name: try again in {minutes}",
    )


@router.post("/login", responses={429: {"description": "Too many failed sign-ins; wait `Retry-After` seconds"}})
def login(session: SessionDep, settings: SettingsDep, login_in: LoginRequest, request: Request) -> LoginPublic:
    """A password login mints a session token (12 h); a token login returns the same token once checked.

    Failed attempts lock the name (per client address, and across addresses) for a doubling time: 429.
    """
    limiter, address = limiter_of(request), client_address(request)
    wait_s = limiter.retry_after(login_in.name, address)
    if wait_s:
        raise _locked(wait_s)  # before the secret is checked: a lockout reveals nothing about it
    if legacy_token_matches(settings, login_in.secret):
        limiter.succeeded(login_in.name, address)
        return LoginPublic(token=login_in.secret, name="admin", role="admin")
    user = users_crud.user_for_token(session, token=login_in.secret)
    if user is not None and user.name == login_in.name:
        limiter.succeeded(login_in.name, address)
        return LoginPublic(token=login_in.secret, name=user.name, role=user.role)  # type: ignore[arg-type]
    minted = users_crud.login_with_password(session, name=login_in.name, password=login_in.secret)
    if minted is None:
        wait_s = limiter.failed(login_in.name, address)
        if wait_s:
            raise _locked(wait_s)
        raise HTTPException(status_code=401, detail="wrong name, password or token (or the account is disabled)")
    session.commit()
    limiter.succeeded(login_in.name, address)
    user, token, expires_at = minted
    return LoginPublic(token=token, name=user.name, role=user.role, expires_at=expires_at)  # type: ignore[arg-type]


@router.get("/me")
def whoami(principal: PrincipalDep) -> Principal:
    return principal
