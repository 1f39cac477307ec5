"""`studio users add|list|disable` as an admin bootstraps a deployment: token printed once, stored hashed."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[2]


def _studio(args: list[str], data_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "studio.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
    )


def test_users_add_list_disable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert _studio(["db", "upgrade"], data_dir).returncode == 0
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "studio.db").stat().st_mode) == 0o600
    added = _studio(
        ["users", "add", "ada", "--role", "admin", "--password"], data_dir, stdin="s3cret-pass\ns3cret-pass\n"
    )
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert len(token) >= 40
    engine = create_engine(f"sqlite:///{data_dir / 'studio.db'}")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash, password_hash, role FROM users WHERE name = 'ada'")).one()
    engine.dispose()
    assert stored[0] == hashlib.sha256(token.encode()).hexdigest()
    assert stored[1].startswith("scrypt$")
    assert stored[2] == "admin"
    again = _studio(["users", "add", "ada"], data_dir)
    assert again.returncode != 0
    assert "already exists" in again.stderr
    bad_role = _studio(["users", "add", "bob", "--role", "root"], data_dir)
    assert bad_role.returncode != 0
    assert "--role must be one of" in bad_role.stderr
    listed = _studio(["users", "list"], data_dir)
    assert "ada" in listed.stdout
    assert "active" in listed.stdout
    assert token not in listed.stdout
    assert _studio(["users", "disable", "ada"], data_dir).returncode == 0
    assert "disabled" in _studio(["users", "list"], data_dir).stdout
    missing = _studio(["users", "disable", "nobody"], data_dir)
    assert missing.returncode != 0
    assert "not found" in missing.stderr


def test_up_with_require_auth_needs_an_account_then_guards_api_and_ui(tmp_path: Path) -> None:
    from tests.studio.test_cli import _env, _stop

    env = _env(tmp_path, STUDIO_REQUIRE_AUTH="1")
    data_dir = Path(env["STUDIO_DATA_DIR"])
    refused = subprocess.run(
        [sys.executable, "-m", "studio.cli", "up"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0
    assert "no account exists" in refused.stderr
    assert _studio(["db", "upgrade"], data_dir).returncode == 0
    token = _studio(["users", "add", "tom", "--role", "trainer"], data_dir).stdout.strip().splitlines()[-1]
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "up"],
            env=env,
            cwd=REPO,
            text=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{env['STUDIO_API_PORT']}/api/v1"
    deadline = time.monotonic() + 240
    while "Agent Studio is up" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(1)
    descendants = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
    try:
        assert httpx.get(f"{api}/runs", timeout=10).status_code == 401
        assert httpx.get(f"{api}/runs", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
        ui = f"http://127.0.0.1:{env['STUDIO_UI_PORT']}"
        assert httpx.get(f"{ui}/config", timeout=10).status_code == 401
        login = httpx.post(f"{ui}/login", data={"username": "tom", "password": token}, timeout=30)
        assert login.status_code == 200, login.text
    finally:
        _stop(proc, descendants, log)
