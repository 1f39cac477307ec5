"""Run presets: `configs/<file>` named in `worker.rl.vocab.PRESETS`, plus a run's overrides → a `TrainConfig`.

The worker resolves a run with `resolve_run_config` before it starts, and the API calls the same
function at `POST /runs`, so a bad override is a 422 naming the field instead of a failed run. No torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.rl.training.config import TrainConfig, config_from_dict
from worker.rl.training.config_loader import deep_merge, read_spec_file
from worker.rl.vocab import PRESETS

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs"
"""The repository's `configs/` folder, where the preset files live (a source checkout or editable install)."""


def configs_dir() -> Path:
    """`CONFIGS_DIR`, or `./configs` for a non-editable install run from the project folder (the images)."""
    return CONFIGS_DIR if CONFIGS_DIR.is_dir() else Path.cwd() / "configs"


def preset_path(preset: str) -> Path:
    """The file of a named preset; ValueError lists the valid names."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is unknown; valid: {', '.join(PRESETS)}")
    return configs_dir() / PRESETS[preset][0]


def preset_data(preset: str | None) -> dict[str, Any]:
    """The preset file's settings as plain nested data ({} for no preset)."""
    return read_spec_file(preset_path(preset)) if preset else {}


def resolve_run_config(preset: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """Preset file + the run's overrides (section by section) → a validated config; ValueError names the field."""
    return config_from_dict(deep_merge(preset_data(preset), overrides))
