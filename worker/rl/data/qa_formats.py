"""Multi-hop QA loaders: HotpotQA, 2WikiMultihopQA, MuSiQue, flat QA and verl JSONL → `Task`s.

Each release format has one small record parser; the format is detected from
the first record (or forced with `format=`). Malformed data raises
`DatasetError` naming the file, the line or record and the offending field.
Hub downloads (when online) live in `worker.rl.data.qa_hub`.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from worker.rl.data.qa_names import DatasetError, canonical_dataset_name
from worker.rl.data.splits import sample_subset
from worker.rl.types import JSONValue, Passage, Task

Record = Mapping[str, Any]

FORMATS: tuple[str, ...] = ("hotpotqa", "hotpotqa_hf", "2wiki", "musique", "flat", "verl")


class _FieldError(Exception):
    """Internal: a record lacks a field or has the wrong type (the caller adds the location)."""


def _get(rec: Record, key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in rec:
        raise _FieldError(f"missing field {key!r}")
    value = rec[key]
    if isinstance(value, str) and kind in (list, dict) and value[:1] in "[{":
        # Some mirrors store nested fields as JSON or Python-literal strings.
        value = _decode_nested(value, key)
    if not isinstance(value, kind):
        raise _FieldError(f"field {key!r} should be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _decode_nested(value: str, key: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise _FieldError(f"field {key!r} is a string that is neither JSON nor a literal") from exc


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _record_id(rec: Record, fallback: str) -> str:
    for key in ("_id", "id", "idx", "qid"):
        if rec.get(key) not in (None, ""):
            return str(rec[key])
    return fallback


def _aliases(*groups: Any) -> tuple[str, ...]:
    out: list[str] = []
    for group in groups:
        items = [group] if isinstance(group, str) else list(group or ())
        for item in items:
            if not isinstance(item, str):
                raise _FieldError(f"answer alias {item!r} should be str, got {type(item).__name__}")
            if item.strip() and item not in out:
                out.append(item)
    if not out:
        raise _FieldError("no non-empty answer")
    return tuple(out)


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _pairs_context(rec: Record, task_id: str) -> tuple[Passage, ...]:
    passages = []
    for i, item in enumerate(_get(rec, "context", list)):
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], list)):
            raise _FieldError(f"field 'context'[{i}] should be [title, [sentences]]")
        title, sentences = str(item[0]), item[1]
        passages.append(Passage(title=title, text="".join(str(s) for s in sentences).strip(), id=f"{task_id}:{i}"))
    return tuple(passages)


def _pairs_titles(rec: Record) -> tuple[str, ...]:
    facts = _get(rec, "supporting_facts", list)
    if not all(isinstance(f, list | tuple) and f for f in facts):
        raise _FieldError("field 'supporting_facts' should be a list of [title, sentence_id]")
    return _unique([str(f[0]) for f in facts])


def _parse_hotpotqa(rec: Record, task_id: str, dataset: str) -> Task:
    titles = _pairs_titles(rec)
    meta: dict[str, JSONValue] = {"dataset": dataset, "type": rec.get("type"), "level": rec.get("level")}
    meta["num_hops"] = len(titles)
    return Task(
        id=task_id,
        question=_get(rec, "question", str),
        answers=_aliases(_get(rec, "answer", str)),
        context=_pairs_context(rec, task_id),
        supporting_titles=titles,
        metadata=meta,
    )


def _parse_hotpotqa_hf(rec: Record, task_id: str, dataset: str) -> Task:
    ctx = _get(rec, "context", dict)
    titles, sentences = _get(ctx, "title", list), _get(ctx, "sentences", list)
    if len(titles) != len(sentences):
        raise _FieldError("field 'context' has different numbers of titles and sentence lists")
    passages = tuple(
        Passage(title=str(t), text="".join(str(s) for s in sents).strip(), id=f"{task_id}:{i}")
        for i, (t, sents) in enumerate(zip(titles, sentences, strict=True))
    )
    support = _unique([str(t) for t in _get(_get(rec, "supporting_facts", dict), "title", list)])
    meta: dict[str, JSONValue] = {"dataset": dataset, "type": rec.get("type"), "level": rec.get("level")}
    meta["num_hops"] = len(support)
    return Task(
        id=task_id,
        question=_get(rec, "question", str),
        answers=_aliases(_get(rec, "answer", str)),
        context=passages,
        supporting_titles=support,
        metadata=meta,
    )


def _parse_2wiki(rec: Record, task_id: str, dataset: str) -> Task:
    titles = _pairs_titles(rec)
    evidences = rec.get("evidences")
    meta: dict[str, JSONValue] = {"dataset": dataset, "type": rec.get("type"), "num_hops": len(titles)}
    if isinstance(evidences, list):
        meta["evidences"] = [list(e) for e in evidences if isinstance(e, list | tuple)]
    return Task(
        id=task_id,
        question=_get(rec, "question", str),
        answers=_aliases(_get(rec, "answer", str), rec.get("answer_aliases") or rec.get("aliases")),
        context=_pairs_context(rec, task_id),
        supporting_titles=titles,
        metadata=meta,
    )


def _parse_musique(rec: Record, task_id: str, dataset: str) -> Task:
    passages, support = [], []
    for i, para in enumerate(_get(rec, "paragraphs", list)):
        if not isinstance(para, Mapping):
            raise _FieldError(f"field 'paragraphs'[{i}] should be an object")
        title = str(para.get("title", ""))
        passages.append(
            Passage(title=title, text=_get(para, "paragraph_text", str), id=f"{task_id}:{para.get('idx', i)}")
        )
        if para.get("is_supporting"):
            support.append(title)
    hop_type = task_id.split("__", 1)[0] if "hop" in task_id.split("__", 1)[0] else None
    meta: dict[str, JSONValue] = {"dataset": dataset, "type": hop_type, "answerable": bool(rec.get("answerable", True))}
    meta["num_hops"] = int(hop_type[0]) if hop_type and hop_type[0].isdigit() else len(support)
    return Task(
        id=task_id,
        question=_get(rec, "question", str),
        answers=_aliases(_get(rec, "answer", str), rec.get("answer_aliases")),
        context=tuple(passages),
        supporting_titles=_unique(support),
        metadata=meta,
    )


def _parse_flat(rec: Record, task_id: str, dataset: str) -> Task:
    golds = rec["golden_answers"] if "golden_answers" in rec else _get(rec, "answer", (str, list))
    meta: dict[str, JSONValue] = {"dataset": dataset}
    meta.update({k: rec[k] for k in ("type", "level") if k in rec})
    return Task(id=task_id, question=_get(rec, "question", str), answers=_aliases(golds), metadata=meta)


def _parse_verl(rec: Record, task_id: str, dataset: str) -> Task:
    raw_extra = rec.get("extra_info")
    extra: Mapping[str, Any] = raw_extra if isinstance(raw_extra, Mapping) else {}
    question = extra.get("question")
    if not isinstance(question, str):
        prompt = _get(rec, "prompt", list)
        users = [m.get("content") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if not users or not isinstance(users[-1], str):
            raise _FieldError("no question: neither 'extra_info.question' nor a user message in 'prompt'")
        question = users[-1]
    truth = _get(_get(rec, "reward_model", dict), "ground_truth", (str, list, dict))
    if isinstance(truth, Mapping):  # Search-R1 layout: {"target": [...]}
        truth = _get(truth, "target", (str, list))
    if "index" in extra:
        task_id = f"{dataset}-{extra['index']}"
    return Task(id=task_id, question=question, answers=_aliases(truth), metadata={"dataset": dataset})


_PARSERS: dict[str, Callable[[Record, str, str], Task]] = {
    "hotpotqa": _parse_hotpotqa,
    "hotpotqa_hf": _parse_hotpotqa_hf,
    "2wiki": _parse_2wiki,
    "musique": _parse_musique,
    "flat": _parse_flat,
    "verl": _parse_verl,
}


def detect_format(rec: Record) -> str:
    """Guess the format name (one of `FORMATS`) from one record's keys."""
    if "paragraphs" in rec:
        return "musique"
    if "reward_model" in rec and "prompt" in rec:
        return "verl"
    if "context" in rec and "supporting_facts" in rec:
        if isinstance(rec["context"], Mapping):
            return "hotpotqa_hf"
        return "2wiki" if "evidences" in rec or "entity_ids" in rec else "hotpotqa"
    if "question" in rec and ("golden_answers" in rec or "answer" in rec):
        return "flat"
    raise _FieldError(f"unrecognised record keys {sorted(rec)[:8]}; pass format= one of {', '.join(FORMATS)}")


def _default_dataset(fmt: str, rec: Record, path: Path) -> str:
    if fmt in ("hotpotqa", "hotpotqa_hf", "2wiki", "musique"):
        return "hotpotqa" if fmt == "hotpotqa_hf" else fmt
    if isinstance(rec.get("data_source"), str):
        return canonical_dataset_name(rec["data_source"])
    return canonical_dataset_name(path.parent.name)


def iter_records(path: Path) -> Iterator[tuple[str, Record]]:
    """Yield `(location, record)` from a JSON list or a JSONL file; locations read "record 3" / "line 7"."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc})") from exc
    if text.lstrip()[:1] == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); the file may be truncated"
            ) from exc
        for i, rec in enumerate(data):
            yield f"record {i}", rec
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}: line {lineno}: invalid JSON ({exc.msg}); expected one object per line"
            ) from exc


def parse_records(
    records: Iterator[tuple[str, Record]], *, source: str, format: str | None = None, dataset: str | None = None
) -> list[tuple[Task, Record]]:
    """Parse located records with one format (detected from the first record unless given)."""
    if format is not None and format not in _PARSERS:
        raise DatasetError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    out: list[tuple[Task, Record]] = []
    fmt, name = format, dataset
    for index, (loc, rec) in enumerate(records):
        try:
            if not isinstance(rec, Mapping):
                raise _FieldError(f"expected a JSON object, got {type(rec).__name__}")
            fmt = fmt or detect_format(rec)
            name = name or _default_dataset(fmt, rec, Path(source))
            out.append((_PARSERS[fmt](rec, _record_id(rec, f"{name}-{index}"), name), rec))
        except _FieldError as exc:
            raise DatasetError(f"{source}: {loc}: {exc} (format {fmt or 'unknown'})") from exc
    return out


def load_qa_tasks(
    source: str,
    *,
    dataset: str | None = None,
    format: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    include_unanswerable: bool = False,
) -> list[Task]:
    """Load QA tasks from a local file (any format above) or, online, a Hugging Face hub id / dataset alias.

    `limit` picks a seeded subset (same seed, same tasks). MuSiQue-Full
    unanswerable questions are dropped unless `include_unanswerable`.
    """
    name = canonical_dataset_name(dataset) if dataset else None
    path = Path(source).expanduser()
    if path.is_file():
        parsed = parse_records(iter_records(path), source=str(path), format=format, dataset=name)
    else:
        from worker.rl.data.qa_hub import load_hub_records  # local import: pulls in `datasets`

        records, hub_name = load_hub_records(source, dataset=name)
        parsed = parse_records(records, source=source, format=format, dataset=name or hub_name)
    if not parsed:
        raise DatasetError(f"{source}: the file holds no records (empty?); give a file with at least one example")
    tasks = [
        task
        for task, rec in parsed
        if include_unanswerable or rec.get("answerable", True) not in (False, "False", "false")
    ]
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    return tasks if limit is None else sample_subset(tasks, limit, seed)
