"""One real attack per class (issue #12): what user code must not reach, outlive, exhaust or kill.

Each tool is ordinary user code run through the real sandbox; each assertion would fail with the
old plain-subprocess runner (it could read all of this, and its children outlived the call).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from worker.sandbox.limits import SandboxLimits
from worker.sandbox.pool import ToolServerPool, run_tool_source

LIMITS = SandboxLimits(time_limit_s=5.0, memory_limit_mb=256)
REPO = Path(__file__).resolve().parents[2]


def _run(source: str, arguments: dict[str, object], limits: SandboxLimits = LIMITS) -> object:
    result = run_tool_source(source, "probe", arguments, limits)
    assert result.ok, result.error
    return result.result


def test_cannot_read_the_environment_of_any_parent(tmp_path: Path) -> None:
    # A parent whose *initial* environment holds a secret, as the worker's holds the DB URL and token.
    secret = f"hunter2-{uuid.uuid4().hex}"
    source = textwrap.dedent(
        """\
        def probe(parent: int) -> str:
            import os
            seen = [repr(dict(os.environ))]
            for pid in {parent, os.getppid(), 1} | {int(p) for p in os.listdir('/proc') if p.isdigit()}:
                try:
                    seen.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))
                except OSError as exc:
                    seen.append(type(exc).__name__)
            return ' | '.join(seen)
        """
    )
    script = (
        "import json, os, sys\nfrom worker.sandbox.limits import SandboxLimits\n"
        "from worker.sandbox.pool import run_tool_source\n"
        f"r = run_tool_source({source!r}, 'probe', {{'parent': os.getpid()}}, SandboxLimits())\n"
        "print(json.dumps(r.to_dict()))\n"
    )
    env = {**os.environ, "STUDIO_API_TOKEN": secret, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"], result["error"]
    assert secret not in result["result"]
    assert "STUDIO" not in result["result"]


def test_cannot_read_data_dir_database_runs_or_redis_socket(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "runs" / "7" / "checkpoints").mkdir(parents=True)
    (data / "runs" / "7" / "checkpoints" / "rng.pt").write_bytes(b"weights")
    (data / "secret.txt").write_text("top secret")
    with sqlite3.connect(data / "studio.db") as db:
        db.execute("create table runs (id integer)")
    redis = socket.socket(socket.AF_UNIX)
    redis.bind(str(data / "redis.sock"))
    redis.listen(1)
    source = textwrap.dedent(
        """\
        def probe(data: str, plant: str) -> dict:
            import os, socket, sqlite3, sys
            out = {}
            for name in ('secret.txt', 'runs/7/checkpoints/rng.pt', 'studio.db'):
                try:
                    out[name] = open(os.path.join(data, name), 'rb').read()[:20].decode(errors='replace')
                except OSError as exc:
                    out[name] = 'denied: ' + type(exc).__name__
            try:
                sqlite3.connect(f'file:{data}/studio.db?mode=ro', uri=True).execute('select * from runs')
                out['sql'] = 'read'
            except sqlite3.Error as exc:
                out['sql'] = 'denied: ' + str(exc)
            try:
                socket.socket(socket.AF_UNIX).connect(os.path.join(data, 'redis.sock'))
                out['redis'] = 'connected'
            except OSError as exc:
                out['redis'] = 'denied: ' + str(exc)
            try:
                open(os.path.join(sys.prefix, 'lib', plant), 'w').write('import evil')
                out['venv'] = 'planted'
            except OSError as exc:
                out['venv'] = 'denied: ' + str(exc)
            out['root'] = sorted(os.listdir('/root')) if os.path.isdir('/root') else []
            out['home'] = os.path.isdir(os.path.expanduser('~root/.ssh'))
            return out
        """
    )
    planted = Path(sys.prefix) / "lib" / f"planted-{uuid.uuid4().hex}.pth"
    try:
        out = _run(source, {"data": str(data), "plant": planted.name})
    finally:
        redis.close()
        was_planted = planted.exists()
        planted.unlink(missing_ok=True)  # never leave it in a shared venv, even when the assertion below fails
    assert isinstance(out, dict)
    assert all(str(out[k]).startswith("denied") for k in ("secret.txt", "runs/7/checkpoints/rng.pt", "studio.db"))
    assert str(out["sql"]).startswith("denied")
    assert str(out["redis"]).startswith("denied")
    assert str(out["venv"]).startswith("denied")
    assert out["root"] in ([], [".pyenv"])  # at most the interpreter's own prefix, read-only
    assert out["home"] is False
    assert not was_planted


def test_cannot_reach_the_network() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    source = textwrap.dedent(
        """\
        def probe(port: int) -> str:
            import socket
            try:
                socket.create_connection(('127.0.0.1', port), timeout=2).sendall(b'stolen')
                return 'connected'
            except OSError as exc:
                return 'refused: ' + str(exc)
        """
    )
    try:
        outcome = _run(source, {"port": port})
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert str(outcome).startswith("refused")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


SPAWN = textwrap.dedent(
    """\
    def probe(marker: str) -> int:
        import subprocess, sys
        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', marker],
                                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        return child.pid
    """
)


def _assert_gone(marker: str) -> None:
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftovers = _processes_with(marker)
    for pid in leftovers:  # never leave a sleeper behind, even when the assertion fails
        os.kill(pid, 9)
    assert leftovers == []


def test_cannot_outlive_its_call_or_its_server() -> None:
    marker = f"studio-leak-{uuid.uuid4().hex}"
    _run(SPAWN, {"marker": marker})
    _assert_gone(marker)
    server_marker = f"studio-leak-{uuid.uuid4().hex}"
    with ToolServerPool(LIMITS, processes=1) as pool:
        pool.add_tool("spawn", SPAWN, "probe")
        assert pool.call("spawn", {"marker": server_marker}).ok
        assert _processes_with(server_marker), "the child lives as long as its server"
    _assert_gone(server_marker)


def test_cannot_fork_bomb() -> None:
    source = textwrap.dedent(
        """\
        def probe() -> int:
            import os, time
            started = 0
            for _ in range(300):
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(3)
                    os._exit(0)
                started += 1
            return started
        """
    )
    started = _run(source, {}, SandboxLimits(time_limit_s=10, max_processes=16))
    assert isinstance(started, int)
    assert started < 16


def test_cannot_fill_the_disk_and_scratch_is_private_and_wiped() -> None:
    limits = SandboxLimits(time_limit_s=10, max_file_size_mb=2, scratch_size_mb=8)
    source = textwrap.dedent(
        """\
        def probe(name: str) -> dict:
            import os
            out = {'cwd': os.getcwd(), 'seen': os.listdir('.')}
            try:
                with open('big.bin', 'wb') as f:
                    f.write(b'x' * (10 * 1024 * 1024))
                out['big'] = 'written'
            except OSError as exc:
                out['big'] = 'refused: ' + str(exc)
            written = 0
            try:
                for i in range(20):
                    with open(f'part{i}.bin', 'wb') as f:
                        f.write(b'x' * (1024 * 1024))
                    written += 1
            except OSError as exc:
                out['full'] = str(exc)
            out['parts'] = written
            open(name, 'w').write('planted')
            return out
        """
    )
    name = f"marker-{uuid.uuid4().hex}"
    with ToolServerPool(limits, processes=1) as pool:
        pool.add_tool("fill", source, "probe")
        first = pool.call("fill", {"name": name}).result
    assert "File too large" in first["big"]
    assert first["parts"] < 8  # the scratch tmpfs is full well before 20 MiB
    assert not Path(first["cwd"], name).exists()  # nothing of it on the host
    with ToolServerPool(limits, processes=1) as pool:
        pool.add_tool("fill", source, "probe")
        second = pool.call("fill", {"name": name}).result
    assert name not in second["seen"]  # a new server starts with an empty scratch dir


def test_cannot_see_or_signal_the_worker() -> None:
    source = textwrap.dedent(
        """\
        def probe(worker: int) -> dict:
            import os, signal
            out = {'visible': str(worker) in os.listdir('/proc')}
            for target in (worker, os.getppid() or 1, 1):
                try:
                    os.kill(target, 0)
                    out[str(target)] = 'signalable'
                except OSError as exc:
                    out[str(target)] = type(exc).__name__
            out['pid'] = os.getpid()
            return out
        """
    )
    out = _run(source, {"worker": os.getpid()})
    assert isinstance(out, dict)
    assert out["visible"] is False
    assert out[str(os.getpid())] == "ProcessLookupError"
    assert out["1"] in ("PermissionError", "signalable")  # PID 1 is the sandbox's own init, never the host's
    assert out["pid"] < 10  # a fresh PID namespace
