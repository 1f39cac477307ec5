"""Accounts: create, list, disable, and resolve a bearer token or a password to a user.

Tokens are `secrets.token_urlsafe(32)` (256 bits) stored as SHA-256; passwords
as `scrypt$n$r$p$salt$hash` with a random 16-byte salt. Lookups by token hash
are exact matches on a unique column, so no secret is ever compared in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.db import utcnow
from backend.core.errors import ConflictError, NotFoundError
from backend.models.user import User, UserSession
from backend.schemas.user import UserCreate

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_TTL = timedelta(hours=12)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def create_user(session: Session, *, user_in: UserCreate) -> tuple[User, str]:
    """A new user and its token (returned once, stored only hashed)."""
    if session.scalar(select(User).where(User.name == user_in.name)) is not None:
        raise ConflictError(f"user {user_in.name!r} already exists; pick another name or disable the old one")
    token = new_token()
    password_hash = hash_password(user_in.password) if user_in.password else None
    user = User(name=user_in.name, role=user_in.role, token_hash=hash_token(token), password_hash=password_hash)
    session.add(user)
    session.flush()
    return user, token


def list_users(session: Session, *, offset: int = 0, limit: int | None = 100) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id).offset(offset).limit(limit)))


def get_user_by_name(session: Session, *, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError("user", repr(name))
    return user


def disable_user(session: Session, *, name: str) -> User:
    """Disable the account and end its password-login sessions (its token stops working at once)."""
    user = get_user_by_name(session, name=name)
    user.disabled = True
    for login in session.scalars(select(UserSession).where(UserSession.user_id == user.id)):
        session.delete(login)
    session.flush()
    return user


def has_active_users(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.disabled.is_(False)).limit(1)) is not None


def user_for_token(session: Session, *, token: str, now: datetime | None = None) -> User | None:
    """The enabled user whose own token or live login-session token this is."""
    digest = hash_token(token)
    user = session.scalar(select(User).where(User.token_hash == digest))
    if user is None:
        login = session.scalar(select(UserSession).where(UserSession.token_hash == digest))
        if login is None or login.expires_at <= (now or utcnow()):
            return None
        user = session.get(User, login.user_id)
    if user is None or user.disabled:
        return None
    return user


def login_with_password(session: Session, *, name: str, password: str) -> tuple[User, str, datetime] | None:
    """Check name + password; on success mint a session token (stored hashed) valid for `SESSION_TTL`."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None or user.disabled or not user.password_hash or not verify_password(password, user.password_hash):
        return None
    token = new_token()
    expires_at = utcnow() + SESSION_TTL
    session.add(UserSession(user_id=user.id, token_hash=hash_token(token), expires_at=expires_at))
    session.flush()
    return user, token, expires_at
