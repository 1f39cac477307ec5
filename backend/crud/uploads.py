"""Dataset uploads: read a task file or a corpus, validate every record, write it normalised, then register.

Task files (JSONL / JSON / CSV / Parquet) with a question and an answer column become flat JSONL
(`{"id", "question", "answer": [aliases]}`); the three benchmark release formats are kept as they are
(the worker parses them). A corpus (JSONL / CSV of title, text) becomes JSONL of `{"id", "title", "text"}`.
Nothing is half-registered: the file is written under a temp name, fully validated, then renamed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.core.errors import InvalidInputError

BENCHMARK_KEYS = {
    "hotpotqa": ("context", "supporting_facts"),
    "2wiki": ("context", "supporting_facts"),
    "musique": ("paragraphs",),
}
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class Normalised:
    """A validated upload: its records (normalised), the source columns, the resolved format."""

    records: list[dict[str, Any]]
    columns: list[str]
    format: str
    raw_kept: bool
    """True for benchmark files, stored byte for byte."""


def _bad(filename: str, where: str, message: str) -> InvalidInputError:
    return InvalidInputError("file", f"{filename}: {where}: {message}")


def iter_rows(filename: str, data: bytes) -> Iterator[tuple[str, Any]]:
    """`(location, record)` of a JSONL, JSON array, CSV or Parquet file; locations read "line 7" / "record 3"."""
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInputError(
            "file", f"{filename}: unsupported file type {suffix or '(none)'}; use {', '.join(SUFFIXES)}"
        )
    if suffix == ".parquet":
        yield from _parquet_rows(filename, data)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad(filename, f"byte {exc.start}", "the file is not UTF-8 text") from exc
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            yield f"line {reader.line_num}", dict(row)
        return
    if suffix == ".json" or text.lstrip()[:1] == "[":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad(filename, f"line {exc.lineno}", f"invalid JSON ({exc.msg})") from exc
        if not isinstance(records, list):
            raise _bad(filename, "record 0", "a .json file must hold a list of objects")
        for i, rec in enumerate(records):
            yield f"record {i}", rec
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise _bad(filename, f"line {lineno}", f"invalid JSON ({exc.msg}); one object per line") from exc


def _parquet_rows(filename: str, data: bytes) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise _bad(filename, "row 0", f"not a readable Parquet file ({exc})") from exc
    for i, row in enumerate(table.to_pylist()):
        yield f"row {i}", row


def _answers(value: Any, filename: str, where: str, column: str) -> list[str]:
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                return [text]
        else:
            return [text]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list) and value and all(isinstance(v, str | int | float) for v in value):
        return [str(v).strip() for v in value if str(v).strip()]
    raise _bad(filename, where, f"field {column!r} must be a non-empty string or list of strings, got {value!r}")


def normalise_tasks(
    filename: str, data: bytes, *, fmt: str, question: str, answer: str, id_column: str | None
) -> Normalised:
    """Validate every record of a task file (see the module docstring)."""
    rows = list(iter_rows(filename, data))
    if not rows:
        raise _bad(filename, "line 1", "the file has no records")
    columns = sorted(rows[0][1]) if isinstance(rows[0][1], Mapping) else []
    first = rows[0][1] if isinstance(rows[0][1], Mapping) else {}
    if fmt == "auto":
        fmt = next((name for name, keys in BENCHMARK_KEYS.items() if all(k in first for k in keys)), "flat")
    if fmt != "flat":
        for where, rec in rows:
            if not isinstance(rec, Mapping):
                raise _bad(filename, where, f"expected a JSON object (format {fmt})")
            missing = [k for k in (*BENCHMARK_KEYS[fmt], "question") if k not in rec]
            if missing:
                raise _bad(filename, where, f"field {missing[0]!r} is missing (format {fmt})")
        return Normalised([dict(r) for _, r in rows], columns, fmt, raw_kept=True)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, (where, rec) in enumerate(rows):
        if not isinstance(rec, Mapping):
            raise _bad(filename, where, f"expected an object with {question!r} and {answer!r}")
        q = rec.get(question)
        if not isinstance(q, str) or not q.strip():
            hint = f"; columns are {', '.join(sorted(rec))}" if question not in rec else ""
            raise _bad(filename, where, f"field {question!r} must be a non-empty string{hint}")
        if answer not in rec:
            raise _bad(filename, where, f"field {answer!r} is missing; columns are {', '.join(sorted(rec))}")
        ident = str(rec.get(id_column) if id_column and rec.get(id_column) not in (None, "") else f"task-{index}")
        if ident in seen:
            raise _bad(filename, where, f"field {id_column!r} repeats the id {ident!r}; ids must be unique")
        seen.add(ident)
        out.append({"id": ident, "question": q.strip(), "answer": _answers(rec[answer], filename, where, answer)})
    return Normalised(out, columns, "flat", raw_kept=False)


def normalise_corpus(filename: str, data: bytes) -> Normalised:
    """Validate every document of a corpus: `text` non-empty, `title` a string when present."""
    out: list[dict[str, Any]] = []
    columns: list[str] = []
    for index, (where, rec) in enumerate(iter_rows(filename, data)):
        if not isinstance(rec, Mapping):
            raise _bad(filename, where, "expected an object with 'title' and 'text'")
        columns = columns or sorted(rec)
        text, title = rec.get("text"), rec.get("title", "")
        if not isinstance(text, str) or not text.strip():
            raise _bad(filename, where, "field 'text' must be a non-empty string")
        if not isinstance(title, str):
            raise _bad(filename, where, f"field 'title' must be a string, got {title!r}")
        out.append({"id": str(rec.get("id") or f"doc-{index}"), "title": title.strip(), "text": text.strip()})
    if not out:
        raise _bad(filename, "line 1", "the corpus has no documents")
    return Normalised(out, columns, "corpus", raw_kept=False)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomically(folder: Path, final_name: str, payload: bytes) -> Path:
    """Write under a temp name in `folder`, fsync, then rename to `final_name` (never a partial file)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / final_name
    tmp = folder / f".tmp-{os.getpid()}-{final_name}"
    with tmp.open("wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(final)
    return final


def stored_payload(filename: str, data: bytes, normalised: Normalised) -> tuple[str, bytes]:
    """The stored file's name suffix and bytes: the original for benchmark files, else normalised JSONL."""
    if normalised.raw_kept:
        return Path(filename).suffix.lower(), data
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in normalised.records)
    return ".jsonl", lines.encode("utf-8")


def safe_stem(filename: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(filename).stem)[:60]
    return stem or "upload"


def check_under_roots(path: Path, roots: list[Path]) -> Path:
    """`path` resolved, or an error when it is outside every data root."""
    resolved = path.expanduser().resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise InvalidInputError(
            "location",
            f"{path} is outside the data roots ({shown}); upload the file or add its folder to STUDIO_DATA_ROOTS",
        )
    return resolved
