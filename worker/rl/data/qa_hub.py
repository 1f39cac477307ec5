"""Hugging Face hub sources for the multi-hop QA benchmarks (used only when online).

The product ships no benchmark data: it downloads the dev sets with
`datasets.load_dataset`, or takes local files in the official formats. Offline
(or without the `datasets` package) the error says where to get the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from worker.rl.data.qa_names import DatasetError, canonical_dataset_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubSource:
    """Where one benchmark's evaluation split lives on the hub, and where the official files are."""

    repo_id: str
    """Hugging Face dataset id."""
    config: str | None
    """Dataset config name (None for the default)."""
    split: str
    """The split used for evaluation (the official dev set)."""
    official_url: str
    """Download page of the official release files (for the offline error message)."""


HUB_SOURCES: dict[str, HubSource] = {
    # HotpotQA distractor dev (7,405 questions), HF layout: context {title, sentences}.
    "hotpotqa": HubSource(
        "hotpotqa/hotpot_qa",
        "distractor",
        "validation",
        "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json",
    ),
    # 2WikiMultihopQA dev (12,576), the first author's own mirror (Apache-2.0), original record layout.
    "2wiki": HubSource(
        "xanhho/2WikiMultihopQA", None, "dev", "https://github.com/Alab-NII/2wikimultihop (data link in README)"
    ),
    # MuSiQue-Ans dev (2,417), original record layout; config "answerable" = MuSiQue-Ans.
    "musique": HubSource(
        "bdsaglam/musique", "answerable", "validation", "https://github.com/StonyBrookNLP/musique (download.sh)"
    ),
}


def _is_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _how_to_get(source: str, hub: HubSource | None) -> str:
    where = f" Official files: {hub.official_url}." if hub else ""
    return (
        f"{source!r} is not a local file and could not be loaded from the Hugging Face hub.{where} "
        "Download the dev file and pass its local path (e.g. `--datasets hotpotqa=path/to/dev.json`), "
        "or go online with the `datasets` package installed."
    )


def resolve_hub_source(source: str, dataset: str | None) -> tuple[HubSource | None, str]:
    """The known hub source for a dataset alias or hub id, and the canonical dataset name."""
    name = canonical_dataset_name(dataset or source)
    hub = HUB_SOURCES.get(name)
    if hub is None:
        for known_name, known in HUB_SOURCES.items():
            if known.repo_id.lower() == source.lower():
                return known, known_name
    return hub, name


def load_hub_records(source: str, *, dataset: str | None = None) -> tuple[Iterator[tuple[str, Mapping[str, Any]]], str]:
    """Download `source` (alias like "hotpotqa" or a hub id) and yield `(location, record)` pairs."""
    hub, name = resolve_hub_source(source, dataset)
    looks_like_path = source.endswith((".json", ".jsonl", ".parquet")) or source.startswith((".", "/", "~"))
    if looks_like_path or (hub is None and "/" not in source):
        raise DatasetError(f"{source}: no such file. {_how_to_get(source, hub)}")
    if _is_offline():
        raise DatasetError(f"offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set): {_how_to_get(source, hub)}")
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError(f"the `datasets` package is missing: {_how_to_get(source, hub)}") from exc
    repo_id = hub.repo_id if hub and canonical_dataset_name(source) == name else source
    config, split = (hub.config, hub.split) if hub else (None, "validation")
    logger.info("loading %s (config=%s, split=%s) from the Hugging Face hub", repo_id, config, split)
    try:
        rows = datasets.load_dataset(repo_id, config, split=split)
    except Exception as exc:  # network, auth and missing-split errors all mean "cannot get it here"
        raise DatasetError(f"{type(exc).__name__}: {exc}. {_how_to_get(source, hub)}") from exc
    return ((f"row {i}", row) for i, row in enumerate(rows)), name
