"""Login exchange and `whoami`: name + password (or token) in, a bearer token for the session out."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from backend.api.deps import PrincipalDep, SessionDep, SettingsDep
from backend.core.security import legacy_token_matches
from backend.crud import users as users_crud
from backend.schemas.user import LoginPublic, LoginRequest, Principal

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login")
def login(session: SessionDep, settings: SettingsDep, login_in: LoginRequest) -> LoginPublic:
    """A password login mints a session token (12 h); a token login returns the same token once checked."""
    if legacy_token_matches(settings, login_in.secret):
        return LoginPublic(token=login_in.secret, name="admin", role="admin")
    user = users_crud.user_for_token(session, token=login_in.secret)
    if user is not None and user.name == login_in.name:
        return LoginPublic(token=login_in.secret, name=user.name, role=user.role)  # type: ignore[arg-type]
    minted = users_crud.login_with_password(session, name=login_in.name, password=login_in.secret)
    if minted is None:
        raise HTTPException(status_code=401, detail="wrong name, password or token (or the account is disabled)")
    session.commit()
    user, token, expires_at = minted
    return LoginPublic(token=token, name=user.name, role=user.role, expires_at=expires_at)  # type: ignore[arg-type]


@router.get("/me")
def whoami(principal: PrincipalDep) -> Principal:
    return principal
