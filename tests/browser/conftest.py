"""Browser fixtures: a real `studio up` stack on free ports in a tmp data dir, and a headless Debian chromium."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Stack:
    """A running studio: where its UI and API answer, and its log file."""

    ui_url: str
    api_url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _wait_up(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`studio up` exited with code {process.returncode} during startup:\n{_log_tail(log)}")
        if "Agent Studio is up" in log.read_text(errors="replace"):
            return
        time.sleep(1.0)
    pytest.fail(f"`studio up` was not healthy within {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")


def _share_model_cache(data_dir: Path) -> None:
    """Point the tmp data dir's model cache at the repo's default one (`var/cache/models`, git-ignored).

    The bundled GGUF is de-quantized once (~40 s on 2 cores) and reused by every later run,
    exactly as a user's `studio up` reuses its data dir; nothing is downloaded.
    """
    shared = REPO_ROOT / "var" / "cache" / "models"
    shared.mkdir(parents=True, exist_ok=True)
    (data_dir / "cache").mkdir(parents=True, exist_ok=True)
    (data_dir / "cache" / "models").symlink_to(shared, target_is_directory=True)


@pytest.fixture(scope="session")
def studio_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`python -m studio.cli up` with a tmp STUDIO_DATA_DIR and free API/UI ports; SIGTERM at the end."""
    data_dir = tmp_path_factory.mktemp("studio-data")
    _share_model_cache(data_dir)
    api_port, ui_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "STUDIO_DATA_DIR": str(data_dir),
        "STUDIO_API_PORT": str(api_port),
        "STUDIO_UI_PORT": str(ui_port),
        "STUDIO_API_HOST": "127.0.0.1",
        "STUDIO_UI_HOST": "127.0.0.1",
        "STUDIO_DATABASE_URL": "",
        "STUDIO_REDIS_URL": "",
        "STUDIO_API_URL": "",
        "STUDIO_API_TOKEN": "",
        "STUDIO_POLL_INTERVAL_S": "2",
        "STUDIO_BENCHMARK_DATA_DIR": str(REPO_ROOT.parent / "shared" / "data"),  # the Evaluate stage's files
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "studio-up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "up"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_up(process, log)
        urls = dict(re.findall(r"(Studio \(UI\)|API)\s+│?\s*(http://\S+)", log.read_text(errors="replace")))
        yield Stack(
            ui_url=urls.get("Studio (UI)", f"http://127.0.0.1:{ui_port}"),
            api_url=f"http://127.0.0.1:{api_port}",
            log=log,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def browser_page(studio_stack: Stack) -> Iterator[object]:
    """A fresh headless chromium page on the studio (skips when chromium is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is missing: apt-get install -y chromium (the Makefile does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(studio_stack.ui_url, wait_until="load", timeout=120_000)
        yield page
        browser.close()
