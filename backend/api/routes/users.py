"""User administration (admins only, per the access policy): list, create (token shown once), disable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from backend.api.deps import SessionDep
from backend.crud import users as users_crud
from backend.schemas.user import UserCreate, UserCreated, UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get("")
def list_users(
    session: SessionDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in users_crud.list_users(session, offset=offset, limit=limit)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(session: SessionDep, user_in: UserCreate) -> UserCreated:
    """Create an account; the answer carries its token, which is stored only hashed and never shown again."""
    user, token = users_crud.create_user(session, user_in=user_in)
    session.commit()
    return UserCreated(**UserPublic.model_validate(user).model_dump(), token=token)


@router.post("/{name}/disable")
def disable_user(session: SessionDep, name: str) -> UserPublic:
    user = users_crud.disable_user(session, name=name)
    session.commit()
    return UserPublic.model_validate(user)
