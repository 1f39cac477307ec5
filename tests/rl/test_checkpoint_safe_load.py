"""Resuming never unpickles code (`weights_only=True`): a planted pickle is refused, older RNG files still load."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.rl._learn_fixtures import tiny_llama
from worker.rl.training.checkpoint import load_checkpoint, save_checkpoint


class _Planted:
    """What an attacker with write access to a run dir would drop in: unpickling it runs os.mkdir."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def _checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    model = tiny_llama()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return save_checkpoint(tmp_path / "run", 1, model=model, optimizer=opt), model, opt


@pytest.mark.parametrize("file", ["rng.pt", "optimizer.pt"])
def test_a_planted_pickle_is_refused_and_never_runs(tmp_path: Path, file: str) -> None:
    ckpt, model, opt = _checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"python": _Planted(marker), "state": {}, "param_groups": []}, ckpt / file)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(ckpt, model=model, optimizer=opt)
    assert not marker.exists()


def test_rng_files_of_older_checkpoints_still_restore_numpy(tmp_path: Path) -> None:
    ckpt, model, opt = _checkpoint(tmp_path)
    np.random.seed(11)
    legacy = torch.load(ckpt / "rng.pt", weights_only=True)
    legacy["numpy"] = np.random.get_state()  # the tuple-with-ndarray form written before
    torch.save(legacy, ckpt / "rng.pt")
    expected = np.random.rand(3)
    np.random.seed(0)
    load_checkpoint(ckpt, model=model, optimizer=opt)
    assert np.array_equal(np.random.rand(3), expected)


def test_new_rng_files_round_trip_numpy(tmp_path: Path) -> None:
    np.random.seed(3)
    ckpt, model, opt = _checkpoint(tmp_path)
    expected = np.random.rand(3)
    np.random.seed(0)
    load_checkpoint(ckpt, model=model, optimizer=opt)
    assert np.array_equal(np.random.rand(3), expected)
