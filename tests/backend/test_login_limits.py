"""Sign-in throttling: doubling lockouts per (name, address) and per name, 429 + Retry-After before any check."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.core.login_limits import LoginLimiter
from backend.crud import users as users_crud
from backend.schemas.user import UserCreate

API = "/api/v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lockouts_double_per_failure_are_per_address_and_cleared_by_success() -> None:
    clock = Clock()
    limiter = LoginLimiter(free_attempts=3, lockout_s=10, max_lockout_s=40, clock=clock)
    assert [limiter.failed("Ann", "1.2.3.4") for _ in range(2)] == [0, 0]  # the first failures are free
    assert limiter.failed("ann", "1.2.3.4") == 10  # names are case-insensitive
    assert limiter.retry_after("ANN", "1.2.3.4") == 10
    assert limiter.retry_after("ann", "5.6.7.8") == 0  # another address is not locked out by this one
    assert limiter.retry_after("bob", "1.2.3.4") == 0
    clock.now += 10
    assert limiter.retry_after("ann", "1.2.3.4") == 0
    assert [limiter.failed("ann", "1.2.3.4") for _ in range(3)] == [20, 40, 40]  # doubling, capped
    limiter.succeeded("ann", "1.2.3.4")
    assert limiter.retry_after("ann", "1.2.3.4") == 0


def test_a_name_guessed_from_many_addresses_is_locked_for_all() -> None:
    clock = Clock()
    limiter = LoginLimiter(free_attempts=2, lockout_s=5, max_lockout_s=60, clock=clock)
    waits = [limiter.failed("ann", f"10.0.0.{i}") for i in range(20)]  # 1 failure each: never a pair lockout
    assert waits[:19] == [0] * 19
    assert waits[19] == 5
    assert limiter.retry_after("ann", "10.9.9.9") == 5  # an address never seen before waits too
    with pytest.raises(ValueError, match="free_attempts"):
        LoginLimiter(free_attempts=0)


def test_login_answers_429_with_retry_after_before_checking_the_secret(client: TestClient, session: Session) -> None:
    users_crud.create_user(session, user_in=UserCreate(name="ann", role="trainer", password="right-password"))
    session.commit()
    client.app.state.login_limiter = LoginLimiter(free_attempts=2, lockout_s=30, max_lockout_s=900)
    ui = TestClient(client.app, base_url=str(client.base_url), client=("127.0.0.1", 40000))  # the UI, on loopback

    def login(secret: str, address: str | None = None, name: str = "ann") -> Any:
        if address is None:
            return client.post(f"{API}/auth/login", json={"name": name, "secret": secret})
        headers = {"X-Studio-Login-Address": address}
        return ui.post(f"{API}/auth/login", json={"name": name, "secret": secret}, headers=headers)

    assert login("guess-1").status_code == 401
    locked = login("guess-2")
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "30"
    assert locked.json()["detail"] == "too many failed sign-ins for this name: try again in 30 s"
    still = login("right-password")  # the right secret during the lockout: still 429, so guesses learn nothing
    assert still.status_code == 429
    assert 0 < int(still.headers["retry-after"]) <= 30
    # the UI forwards each browser's address (trusted from loopback): another browser is not locked out
    assert login("right-password", address="203.0.113.7").status_code == 200
    assert login("guess", name="bob").status_code == 401
    # the header counts only from loopback: a remote client cannot pick a fresh address per guess
    forged = client.post(
        f"{API}/auth/login", json={"name": "ann", "secret": "x"}, headers={"X-Studio-Login-Address": "198.51.100.1"}
    )
    assert forged.status_code == 429
