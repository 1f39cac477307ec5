"""The tool sandbox stops runaway code, hides secrets and leaves the worker process alive."""

from __future__ import annotations

import pytest

from worker.sandbox import SandboxLimits, run_tool_source


def test_returns_result_and_captures_prints() -> None:
    source = "def add(a: int, b: int) -> int:\n    print('adding')\n    return a + b\n"
    result = run_tool_source(source, "add", {"a": 2, "b": 5})
    assert result.ok
    assert result.result == 7
    assert result.stdout.strip() == "adding"
    assert result.duration_s > 0


def test_infinite_loop_is_stopped() -> None:
    result = run_tool_source("def spin():\n    while True:\n        pass\n", "spin", {}, SandboxLimits(time_limit_s=1))
    assert not result.ok
    assert "time limit exceeded" in result.error
    assert 1.0 <= result.duration_s < 5


def test_two_gigabyte_allocation_is_stopped() -> None:
    source = "def hog():\n    block = bytearray(2 * 1024 ** 3)\n    return len(block)\n"
    result = run_tool_source(source, "hog", {}, SandboxLimits(memory_limit_mb=256))
    assert not result.ok
    assert "memory" in result.error.lower()


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_DATABASE_URL", "postgresql://secret@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    source = "def env() -> dict:\n    import os\n    return {'env': dict(os.environ), 'cwd': os.getcwd()}\n"
    result = run_tool_source(source, "env", {})
    assert result.ok
    assert set(result.result["env"]) <= {"PATH", "LANG", "LC_CTYPE"}
    assert "hunter2" not in str(result.result)
    assert "studio-tool-" in result.result["cwd"]


def test_exceptions_and_crashes_come_back_as_errors() -> None:
    raised = run_tool_source("def f(x: str) -> str:\n    raise ValueError('bad ' + x)\n", "f", {"x": "input"})
    assert raised.error == "ValueError: bad input"
    missing = run_tool_source("def f():\n    return 1\n", "g", {})
    assert "NameError" in missing.error
    crash = run_tool_source("def f():\n    import os\n    os._exit(9)\n", "f", {})
    assert not crash.ok
    assert "exited with code 9" in crash.error


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="time_limit_s"):
        SandboxLimits(time_limit_s=0)
    with pytest.raises(ValueError, match="memory_limit_mb"):
        SandboxLimits(memory_limit_mb=8)
