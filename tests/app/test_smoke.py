"""Launch smoke test: build the app over a fake client, serve it, call `api_name`s through gradio_client."""

from __future__ import annotations

import socket

from gradio_client import Client

from app.main import build_app, launch_options
from tests.app._fakes import FakeStudioClient, make_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_launch_and_call_refresh_runs() -> None:
    fake = FakeStudioClient()
    fake.runs[1] = make_run(1, name="smoke-run")
    demo = build_app(fake, poll_interval_s=5.0)  # type: ignore[arg-type]
    demo.queue()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        table, hint = client.predict("all", "all", api_name="/refresh_runs")
        assert table["data"][0][:2] == ["1", "smoke-run"]
        assert hint == ""
        health, guide = client.predict(api_name="/health")
        assert "Workers" in health
        assert "Tools" in guide
    finally:
        demo.close()
