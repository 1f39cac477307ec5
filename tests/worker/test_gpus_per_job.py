"""`STUDIO_WORKER_GPUS_PER_JOB`: one job per N GPUs, each pool process sees its own N (a run's N ranks)."""

from __future__ import annotations

import pytest

from worker.devices import device_for_process, gpus_per_job, pin_current_process, worker_concurrency


def test_concurrency_is_one_job_per_block_of_gpus() -> None:
    assert worker_concurrency(0, ["gpu"], ["0", "1", "2", "3"], 2) == 2
    assert worker_concurrency(0, ["gpu"], ["0", "1", "2"], 2) == 1, "the odd GPU stays idle"
    assert worker_concurrency(0, ["gpu"], ["0"], 4) == 1
    assert worker_concurrency(0, ["cpu"], ["0", "1"], 2) == 1
    assert worker_concurrency(3, ["gpu"], ["0", "1"], 2) == 3, "an explicit setting wins"


def test_each_pool_process_gets_its_own_block() -> None:
    gpus = ["4", "5", "6", "7"]
    assert [device_for_process(i, gpus, 2) for i in range(3)] == ["4,5", "6,7", "4,5"]
    assert device_for_process(0, ["4"], 2) == "4", "fewer GPUs than asked: the job gets them all"
    env = {"STUDIO_WORKER_GPUS": "4,5,6,7", "STUDIO_WORKER_GPUS_PER_JOB": "2"}
    assert pin_current_process(1, env) == "6,7"
    assert env["CUDA_VISIBLE_DEVICES"] == "6,7"


def test_gpus_per_job_setting_is_checked() -> None:
    assert gpus_per_job({}) == 1
    assert gpus_per_job({"STUDIO_WORKER_GPUS_PER_JOB": "4"}) == 4
    with pytest.raises(ValueError, match="STUDIO_WORKER_GPUS_PER_JOB='two' must be a whole number >= 1"):
        gpus_per_job({"STUDIO_WORKER_GPUS_PER_JOB": "two"})
    with pytest.raises(ValueError, match="must be a whole number"):
        gpus_per_job({"STUDIO_WORKER_GPUS_PER_JOB": "0"})
