"""A locked-out sign-in in a real chromium: the Gradio login page shows the lockout's own message.

A real API (uvicorn, `require_auth`, lockouts after 3 failures) and the secured UI in-process;
no `studio up` needed. Leaves `test-artifacts/browser/login-lockout.png`.
"""

from __future__ import annotations

import pytest

from app.main import build_secured_app
from app.settings import UISettings
from tests.app.test_ui_auth import _add_user, _free_port, api  # noqa: F401 - `api` is the real-API fixture
from tests.browser.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS


def test_login_page_shows_the_lockout_message(api: tuple[str, str]) -> None:  # noqa: F811
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is missing: apt-get install -y chromium (the Makefile does)")
    from playwright.sync_api import sync_playwright

    api_url, database_url = api
    _add_user(database_url, "tina", "trainer", "trainer-password")
    demo, options = build_secured_app(UISettings(api_url=api_url, ui_host="127.0.0.1", require_auth=True, api_token=""))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=120_000)
            try:
                for attempt in range(3):
                    page.get_by_label("username").fill("tina")
                    page.get_by_label("password").fill(f"guess-{attempt}")
                    with page.expect_response(lambda r: r.url.endswith("/login")) as answer:
                        page.get_by_role("button", name="Login").click()
                    assert answer.value.status == (429 if attempt == 2 else 400)
                notice = page.locator("#studio-login-notice")
                notice.wait_for(timeout=10_000)
                assert notice.inner_text() == (
                    "Sign-in locked: too many failed sign-ins for this name: try again in 30 s"
                )
                page.screenshot(path=str(ARTIFACTS / "login-lockout.png"), full_page=True)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "FAILED-login-lockout.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        demo.close()
