"""Accounts, roles and the request guard, through a real TestClient and a real uvicorn process.

Each test is an attack or a rule from issue #12: the one policy covers every
route, a labeler cannot train, tokens are stored hashed, a rebinding Host or a
cross-site write is refused, and `uvicorn --host 0.0.0.0` cannot skip auth.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.api.deps import get_enqueue
from backend.api.policy import ROUTE_POLICY, policy_for
from backend.core.db import engine_for
from backend.crud import users as users_crud
from backend.main import create_app
from backend.models.user import User
from backend.queue import TASK_OF_RUN_KIND
from backend.schemas.user import UserCreate
from tests.backend.conftest import LOOPBACK_URL
from tests.backend.test_api_runs import traj_dict

API = "/api/v1"
REPO = Path(__file__).resolve().parents[2]
TOOL_SOURCE = '''def echo(text: str) -> str:
    """Echo.

    Args:
        text: What to echo.
    """
    return text
'''


def _user(session: Session, name: str, role: str, password: str | None = None) -> str:
    _, token = users_crud.create_user(session, user_in=UserCreate(name=name, role=role, password=password))  # type: ignore[arg-type]
    session.commit()
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth_client(db_url: str, monkeypatch: pytest.MonkeyPatch, enqueued: list) -> Iterator[TestClient]:
    """The API on loopback with `STUDIO_REQUIRE_AUTH=1` (a shared host), enqueues recorded."""
    monkeypatch.setenv("STUDIO_REQUIRE_AUTH", "1")
    app = create_app()
    app.dependency_overrides[get_enqueue] = lambda: lambda task, run_id, **_: enqueued.append((task, run_id)) or "t"
    with TestClient(app, base_url=LOOPBACK_URL) as client:
        yield client


def test_every_route_has_a_policy_entry(client: TestClient) -> None:
    routes = [r for r in client.app.routes if isinstance(r, APIRoute) and r.path.startswith(API)]  # type: ignore[attr-defined]
    assert len(routes) >= 30
    missing = [(m, r.path) for r in routes for m in r.methods if not policy_for(m, r.path_format)[0]]
    assert missing == [], f"routes without an access policy in backend/api/policy.py: {missing}"
    served = {(m, r.path_format.removeprefix(API)) for r in routes for m in r.methods}
    assert set(ROUTE_POLICY) <= served, f"stale policy entries: {set(ROUTE_POLICY) - served}"


def test_require_auth_on_loopback_refuses_anonymous_and_bad_tokens(auth_client: TestClient) -> None:
    assert auth_client.get(f"{API}/runs").status_code == 401
    assert auth_client.get(f"{API}/runs", headers=_bearer("nope")).status_code == 401
    assert auth_client.get(f"{API}/runs", headers={"Authorization": "Basic eDp5"}).status_code == 401


def test_labeler_reads_and_labels_but_cannot_train(auth_client: TestClient, session: Session, enqueued: list) -> None:
    trainer = _bearer(_user(session, "tina", "trainer"))
    labeler = _bearer(_user(session, "lara", "labeler"))
    run = auth_client.post(f"{API}/runs", json={"kind": "rollout"}, headers=trainer)
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    refused = auth_client.post(f"{API}/runs", json={"kind": "train"}, headers=labeler)
    assert refused.status_code == 403
    assert "needs trainer" in refused.json()["detail"]
    assert auth_client.post(f"{API}/runs/{run_id}/cancel", headers=labeler).status_code == 403
    assert (
        auth_client.post(f"{API}/tools", json={"name": "t", "source": TOOL_SOURCE}, headers=labeler).status_code == 403
    )
    assert auth_client.get(f"{API}/users", headers=trainer).status_code == 403
    assert auth_client.get(f"{API}/runs/{run_id}", headers=labeler).status_code == 200
    assert enqueued == [(TASK_OF_RUN_KIND["rollout"], run_id)]
    # labeling: the labeler's name is the account's, whatever the form says
    from backend.crud import trajectories as traj_crud

    traj_crud.bulk_insert(session, run_id=run_id, step=1, trajectories=[traj_dict("g1", 1.0)])
    session.commit()
    traj_id = auth_client.get(f"{API}/trajectories", params={"run_id": run_id}, headers=labeler).json()["items"][0][
        "id"
    ]
    label = auth_client.post(
        f"{API}/trajectories/{traj_id}/labels", json={"score": 1.0, "labeler": "mallory"}, headers=labeler
    )
    assert label.status_code == 201, label.text
    assert label.json()["labeler"] == "lara"
    assert auth_client.get(f"{API}/auth/me", headers=labeler).json() == {
        "name": "lara",
        "role": "labeler",
        "authenticated": True,
    }


def test_legacy_api_token_is_an_admin(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_API_TOKEN", "legacy-admin-token")
    with TestClient(create_app(), base_url=LOOPBACK_URL) as client:
        made = client.post(f"{API}/users", json={"name": "ann", "role": "admin"}, headers=_bearer("legacy-admin-token"))
        assert made.status_code == 201, made.text
        assert client.get(f"{API}/users", headers=_bearer(made.json()["token"])).json()[0]["name"] == "ann"


def test_tokens_and_passwords_are_stored_hashed(auth_client: TestClient, session: Session, db_url: str) -> None:
    token = _user(session, "pat", "trainer", password="correct horse battery")
    login = auth_client.post(f"{API}/auth/login", json={"name": "pat", "secret": "correct horse battery"})
    assert login.status_code == 200, login.text
    session_token = login.json()["token"]
    assert session_token != token
    assert auth_client.get(f"{API}/tools", headers=_bearer(session_token)).status_code == 200
    row = session.scalar(select(User).where(User.name == "pat"))
    assert row is not None
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.password_hash is not None
    assert row.password_hash.startswith("scrypt$")
    raw = b"".join(p.read_bytes() for p in Path(db_url.split("///", 1)[1]).parent.glob("studio.db*"))
    for secret in (token, session_token, "correct horse battery"):
        assert secret.encode() not in raw, "a secret is stored in plain text"
    wrong = auth_client.post(f"{API}/auth/login", json={"name": "pat", "secret": "wrong password"})
    assert wrong.status_code == 401
    # token login returns the same token; disabling the user ends both tokens at once
    assert auth_client.post(f"{API}/auth/login", json={"name": "pat", "secret": token}).json()["token"] == token
    users_crud.disable_user(session, name="pat")
    session.commit()
    assert auth_client.get(f"{API}/tools", headers=_bearer(token)).status_code == 401
    assert auth_client.get(f"{API}/tools", headers=_bearer(session_token)).status_code == 401


def test_rebinding_host_and_cross_site_writes_are_refused(client: TestClient) -> None:
    evil = client.get(f"{API}/runs", headers={"Host": "attacker.example:8000"})
    assert evil.status_code == 400
    assert "DNS-rebinding" in evil.json()["detail"]
    assert client.get(f"{API}/runs", headers={"Host": "localhost:8000"}).status_code == 200
    bare = TestClient(client.app, base_url=LOOPBACK_URL)  # no X-Studio-Client header: like a browser form
    for path in (
        "/runs/ping",
        "/runs/1/cancel",
        "/runs/1/resume",
        "/environments/1/validate",
        "/runs/1/checkpoints/1/export",
    ):
        response = bare.post(f"{API}{path}")
        assert response.status_code == 403, (path, response.text)
        assert "CSRF" in response.json()["detail"]
    form = bare.post(f"{API}/tools", data={"name": "x", "source": "y"})
    assert form.status_code == 403
    foreign = client.post(f"{API}/runs/ping", headers={"Origin": "https://attacker.example"})
    assert foreign.status_code == 403
    cross = client.post(f"{API}/runs/ping", headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    same = client.post(f"{API}/runs", json={"kind": "rollout"}, headers={"Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 201, same.text


def test_allowed_hosts_setting_extends_the_host_list(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_ALLOWED_HOSTS", "studio.lan")
    with TestClient(create_app(), base_url=LOOPBACK_URL) as client:
        assert client.get(f"{API}/runs", headers={"Host": "studio.lan:8000"}).status_code == 200
        assert client.get(f"{API}/runs", headers={"Host": "other.lan"}).status_code == 400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_uvicorn_bound_to_all_interfaces_requires_a_token(db_url: str, studio_env: Path) -> None:
    """The setting says loopback, the actual bind is 0.0.0.0: requests still need a token."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")},
        "STUDIO_DATA_DIR": str(studio_env),
        "STUDIO_API_HOST": "127.0.0.1",
    }
    with Session(engine_for(db_url)) as session:
        token = _user(session, "ops", "admin")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "backend.main:create_app",
            "--factory",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}{API}/runs"
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(url, timeout=5)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.3)
        assert response.status_code == 401, response.text
        assert httpx.get(url, headers=_bearer(token), timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
