"""Account schemas: roles, the login exchange, and the user as the API shows it (never a secret hash)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel

Role = Literal["labeler", "trainer", "admin"]
ROLE_RANK: dict[str, int] = {"labeler": 1, "trainer": 2, "admin": 3}
"""Each role holds every power of the roles ranked below it."""

USER_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=USER_NAME_PATTERN)
    role: Role = "labeler"
    password: str | None = Field(default=None, min_length=8, max_length=1024)


class UserPublic(ORMModel):
    id: int
    name: str
    role: Role
    disabled: bool
    created_at: datetime


class UserCreated(UserPublic):
    """The answer to creating a user: the only time its token is shown."""

    token: str


class LoginRequest(BaseModel):
    """`secret` is the user's password or its API token."""

    name: str = Field(min_length=1, max_length=100)
    secret: str = Field(min_length=1, max_length=1024)


class LoginPublic(BaseModel):
    """A bearer token for the session: the user's own token, or one minted for a password login."""

    token: str
    name: str
    role: Role
    expires_at: datetime | None = None


class Principal(BaseModel):
    """Who is calling: a named account, the legacy `STUDIO_API_TOKEN` admin, or the loopback anonymous user."""

    name: str
    role: Role
    authenticated: bool
