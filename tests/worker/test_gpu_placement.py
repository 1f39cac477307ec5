"""One job per GPU: worker concurrency from the visible GPUs, and each pool process pinned to its own."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient

from backend.core.config import get_settings
from backend.core.db import alembic_config
from backend.main import create_app
from studio.processes import worker_args
from worker.devices import device_for_process, pin_current_process, visible_gpus, worker_concurrency

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0,1", ["0", "1"]), (" 2, 3 ", ["2", "3"]), ("", []), ("-1", []), ("1,-1,2", ["1"]), ("GPU-ab12", ["GPU-ab12"])],
)
def test_visible_gpus_follow_cuda_visible_devices(value: str, expected: list[str]) -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": value}) == expected


def test_visible_gpus_without_env_or_nvidia_smi_is_empty() -> None:
    assert visible_gpus({}, nvidia_smi=None) == []
    assert visible_gpus({}, nvidia_smi="/nonexistent/nvidia-smi") == []


def test_concurrency_is_one_job_per_gpu_on_gpu_workers() -> None:
    assert worker_concurrency(0, ["cpu", "gpu"], ["0", "1", "2"]) == 3
    assert worker_concurrency(0, ["gpu"], []) == 1, "a CPU-only machine runs the same jobs, one at a time"
    assert worker_concurrency(0, ["cpu"], ["0", "1"]) == 1
    assert worker_concurrency(4, ["gpu"], ["0", "1"]) == 4, "an explicit setting wins"


def test_each_pool_process_gets_its_own_gpu() -> None:
    assert [device_for_process(i, ["4", "6"]) for i in range(3)] == ["4", "6", "4"]
    assert device_for_process(None, ["4"]) is None
    env = {"STUDIO_WORKER_GPUS": "4,6", "CUDA_VISIBLE_DEVICES": "4,6"}
    assert pin_current_process(1, env) == "6"
    assert env["CUDA_VISIBLE_DEVICES"] == "6"
    cpu_only = {"STUDIO_WORKER_GPUS": ""}
    assert pin_current_process(0, cpu_only) is None
    assert "CUDA_VISIBLE_DEVICES" not in cpu_only


def test_real_worker_pins_its_pool_processes(
    studio_env: Path, embedded_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefork worker started the way `studio worker` starts it, on a machine that 'shows' GPUs 7 and 9
    (nothing here initialises CUDA, so no GPU is needed): concurrency 2, every job sees one GPU."""
    monkeypatch.setenv("STUDIO_REDIS_URL", embedded_redis_url)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,9")
    command.upgrade(alembic_config(get_settings().resolved_database_url), "head")
    args = worker_args(get_settings())
    assert args[args.index("-c") + 1] == "2"
    log = open(studio_env / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        with TestClient(create_app(), base_url="http://127.0.0.1", headers={"X-Studio-Client": "tests"}) as client:
            ids = [client.post("/api/v1/runs/ping").json()["id"] for _ in range(4)]
            deadline = time.monotonic() + 90
            runs: list[dict] = []
            while time.monotonic() < deadline:
                runs = [client.get(f"/api/v1/runs/{i}").json() for i in ids]
                if all(r["status"] in ("succeeded", "failed") for r in runs):
                    break
                assert proc.poll() is None, (studio_env / "worker.log").read_text()
                time.sleep(0.3)
        assert all(r["status"] == "succeeded" for r in runs), (studio_env / "worker.log").read_text()
        assert {r["result"]["cuda_visible_devices"] for r in runs} <= {"7", "9"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
