"""The Gradio UI behind sign-in, against a real API served by uvicorn on loopback.

Without a session nothing reaches `save_tool`; after signing in, each browser
session acts with its own user's token (a labeler's save is refused by the
API's role policy, a trainer's lands). On loopback without sign-in, a
rebinding Host header and a cross-site POST are refused before Gradio.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from alembic import command
from gradio_client import Client
from sqlalchemy.orm import Session

from app.guard import middleware_kwargs
from app.main import build_app, build_secured_app, launch_options
from app.session import SessionTokens
from app.settings import UISettings
from backend.core.config import Settings
from backend.core.db import alembic_config, engine_for
from backend.crud import tools as tools_crud
from backend.crud import users as users_crud
from backend.main import create_app
from backend.schemas.user import UserCreate
from tests.app._fakes import FakeStudioClient, make_run

TOOL_SOURCE = '''def shout(text: str) -> str:
    """Upper-case the text.

    Args:
        text: What to shout.
    """
    return text.upper()
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real API (uvicorn, loopback, `require_auth`) on a migrated SQLite DB: (url, database url)."""
    database_url = f"sqlite:///{tmp_path / 'studio.db'}"
    command.upgrade(alembic_config(database_url), "head")
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        redis_url="",
        api_token="",
        require_auth=True,
        login_free_attempts=3,
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", database_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _add_user(database_url: str, name: str, role: str, password: str) -> None:
    with Session(engine_for(database_url)) as session:
        users_crud.create_user(session, user_in=UserCreate(name=name, role=role, password=password))  # type: ignore[arg-type]
        session.commit()


def _tool_names(database_url: str) -> list[str]:
    with Session(engine_for(database_url)) as session:
        return [t.name for t in tools_crud.list_tools(session)]


def test_ui_requires_sign_in_and_acts_as_the_signed_in_user(api: tuple[str, str]) -> None:
    api_url, database_url = api
    _add_user(database_url, "tina", "trainer", "trainer-password")
    _add_user(database_url, "lara", "labeler", "labeler-password")
    settings = UISettings(api_url=api_url, ui_host="127.0.0.1", require_auth=True, api_token="")
    demo, options = build_secured_app(settings)
    demo.queue()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    ui = f"http://127.0.0.1:{port}"
    try:
        # no session: Gradio's own check and ours refuse the named endpoint
        anonymous = httpx.post(f"{ui}/gradio_api/call/save_tool", json={"data": ["anon", "", TOOL_SOURCE]})
        assert anonymous.status_code == 401, anonymous.text
        with pytest.raises(Exception, match=r"(?i)login|credentials|401"):
            Client(ui, verbose=False, auth=("tina", "wrong password"))
        # a labeler signs in: the API's policy refuses the tool (her token, not a shared one)
        lara = Client(ui, verbose=False, auth=("lara", "labeler-password"))
        status = lara.predict("lara_tool", "", TOOL_SOURCE, api_name="/save_tool")[-1]
        assert "needs trainer" in status
        # a trainer signs in: the tool lands
        tina = Client(ui, verbose=False, auth=("tina", "trainer-password"))
        status = tina.predict("tina_tool", "", TOOL_SOURCE, api_name="/save_tool")[-1]
        assert "Saved **tina_tool**" in status, status
        assert _tool_names(database_url) == ["tina_tool"]
    finally:
        demo.close()


def test_ui_sign_in_lockout_is_a_429_with_its_message(api: tuple[str, str]) -> None:
    api_url, database_url = api
    _add_user(database_url, "tina", "trainer", "trainer-password")
    settings = UISettings(api_url=api_url, ui_host="127.0.0.1", require_auth=True, api_token="")
    demo, options = build_secured_app(settings)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    ui = f"http://127.0.0.1:{port}"
    try:

        def sign_in(password: str) -> httpx.Response:
            return httpx.post(f"{ui}/login", data={"username": "tina", "password": password})

        assert [sign_in(f"guess-{i}").status_code for i in range(2)] == [400, 400]  # Gradio: incorrect credentials
        locked = sign_in("guess-3")
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == "30"
        assert locked.json()["detail"] == "too many failed sign-ins for this name: try again in 30 s"
        assert sign_in("trainer-password").status_code == 429  # the right password waits too
        page = httpx.get(f"{ui}/")
        assert "studio-login-notice" in page.text  # the login page shows that message (Gradio shows none on 429)
    finally:
        demo.close()


def test_loopback_ui_refuses_rebinding_hosts_and_cross_site_posts() -> None:
    fake = FakeStudioClient()
    fake.runs[1] = make_run(1, name="guarded")
    demo = build_app(fake, poll_interval_s=5.0)  # type: ignore[arg-type]
    demo.queue()
    port = _free_port()
    guard = middleware_kwargs(SessionTokens(), require_login=False, allowed_hosts=[])
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        app_kwargs=guard,
        **launch_options(),
    )
    ui = f"http://127.0.0.1:{port}"
    body = {"data": ["evil", "", TOOL_SOURCE]}
    try:
        rebinding = httpx.post(f"{ui}/gradio_api/call/save_tool", json=body, headers={"Host": f"evil.example:{port}"})
        assert rebinding.status_code == 400
        assert httpx.get(f"{ui}/config", headers={"Host": "evil.example"}).status_code == 400
        cross = httpx.post(f"{ui}/gradio_api/call/save_tool", json=body, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        fetch_meta = httpx.post(f"{ui}/gradio_api/call/save_tool", json=body, headers={"Sec-Fetch-Site": "cross-site"})
        assert fetch_meta.status_code == 403
        assert fake.tools == {}
        # the studio's own page (same origin) still works
        table, _hint = Client(ui, verbose=False).predict("all", "all", api_name="/refresh_runs")
        assert table["data"][0][:2] == ["1", "guarded"]
        same = httpx.post(f"{ui}/gradio_api/call/refresh_runs", json={"data": ["all", "all"]}, headers={"Origin": ui})
        assert same.status_code == 200
    finally:
        demo.close()


def test_ui_bound_publicly_requires_sign_in_without_any_setting() -> None:
    """`STUDIO_UI_HOST=0.0.0.0` alone turns sign-in on: an anonymous `save_tool` is refused."""
    settings = UISettings(api_url="http://127.0.0.1:9", ui_host="0.0.0.0", require_auth=False, api_token="")
    assert settings.login_required
    demo, options = build_secured_app(settings)
    assert callable(options["auth"])
    demo.queue()
    port = _free_port()
    demo.launch(server_name="0.0.0.0", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    try:
        body = {"data": ["public", "", TOOL_SOURCE]}
        refused = httpx.post(f"http://127.0.0.1:{port}/gradio_api/call/save_tool", json=body)
        assert refused.status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/config").status_code == 401
    finally:
        demo.close()


def test_compose_never_publishes_an_unauthenticated_ui() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "compose.yml").read_text())
    ui = compose["services"]["ui"]
    assert str(ui["environment"]["STUDIO_REQUIRE_AUTH"]) == "1"
    assert "STUDIO_API_TOKEN" not in ui["environment"], "the UI must act with each user's token, never a shared one"
    env = {k: str(v) for k, v in ui["environment"].items()}
    assert UISettings(**{k.removeprefix("STUDIO_").lower(): v for k, v in env.items()}).login_required
