"""Benchmark names and the dataset error: the leaf both the file loaders and the hub loader import.

`qa_formats` (local files) imports `qa_hub` (downloads) for non-file sources; both need these
names, so they live here and the two modules never import each other both ways.
"""

from __future__ import annotations

DATASET_ALIASES: dict[str, str] = {
    "hotpotqa": "hotpotqa",
    "hotpot_qa": "hotpotqa",
    "hotpot": "hotpotqa",
    "hotpotqa/hotpot_qa": "hotpotqa",
    "2wiki": "2wiki",
    "2wikimultihopqa": "2wiki",
    "2wikimultihop": "2wiki",
    "2wikimqa": "2wiki",
    "musique": "musique",
    "musique_ans": "musique",
    "musique-ans": "musique",
    "bdsaglam/musique": "musique",
}


class DatasetError(ValueError):
    """A dataset could not be found or read; the message says where and how to fix it."""


def canonical_dataset_name(name: str) -> str:
    """Map an alias (`hotpot_qa`, `2WikiMultihopQA`, `bdsaglam/musique`) to hotpotqa/2wiki/musique."""
    key = name.strip().lower()
    return DATASET_ALIASES.get(key, key)
