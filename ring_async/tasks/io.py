"""Reading and writing task files: JSONL (one JSON object a line) or Parquet (one row a record).

The two forms hold the same records (see :mod:`ring_async.tasks.record`); Parquet stores ``tests`` and
``metadata`` as JSON text because their shape differs from task to task. A malformed file raises
:class:`TaskFormatError` naming the file and the line (JSONL, 1-based) or row (Parquet, 1-based).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ring_async.tasks.errors import TaskFormatError
from ring_async.tasks.record import TaskRecord, record_from_mapping

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)

PARQUET_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("reward_type", pa.string(), nullable=False),
        pa.field("answer", pa.string()),
        pa.field("tests", pa.string()),
        pa.field("response", pa.string()),
        pa.field("metadata", pa.string()),
    ]
)


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise TaskFormatError(f"{path}: unknown task file type; use one of {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)}")


def iter_tasks(path: str | os.PathLike[str]) -> Iterator[TaskRecord]:
    """Stream the records of a JSONL or Parquet task file, checking each one."""
    path = Path(path)
    kind = _format_of(path)
    if not path.is_file():
        raise TaskFormatError(f"{path}: no such task file")
    yield from (_iter_jsonl(path) if kind == "jsonl" else _iter_parquet(path))


def read_tasks(path: str | os.PathLike[str]) -> list[TaskRecord]:
    records = list(iter_tasks(path))
    if not records:
        raise TaskFormatError(f"{path}: the file holds no tasks")
    return records


def _iter_jsonl(path: Path) -> Iterator[TaskRecord]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except UnicodeDecodeError:
                raise TaskFormatError(f"{path}:{number}: not UTF-8 text") from None
            except json.JSONDecodeError as err:
                raise TaskFormatError(f"{path}:{number}: invalid JSON: {err.msg} (column {err.colno})") from None
            try:
                yield record_from_mapping(data)
            except ValueError as err:
                raise TaskFormatError(f"{path}:{number}: {err}") from None


def _iter_parquet(path: Path) -> Iterator[TaskRecord]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise TaskFormatError(f"{path}: not a readable Parquet file: {err}") from None
    names = set(parquet.schema_arrow.names)
    for column in ("prompt", "reward_type"):
        if column not in names:
            raise TaskFormatError(f"{path}: no {column!r} column (columns: {', '.join(sorted(names))})")
    row = 0
    for batch in parquet.iter_batches():
        for data in batch.to_pylist():
            row += 1
            data = {key: value for key, value in data.items() if value is not None}
            try:
                if isinstance(data.get("metadata"), str):
                    data["metadata"] = _json_field(data["metadata"], "metadata")
                yield record_from_mapping(data)
            except ValueError as err:
                raise TaskFormatError(f"{path}: row {row}: {err}") from None


def _json_field(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name!r} is not valid JSON: {err.msg}") from None


def write_tasks(records: Iterable[TaskRecord], path: str | os.PathLike[str]) -> Path:
    """Write records as JSONL or Parquet (by suffix), atomically: readers never see a half-written file."""
    path = Path(path)
    kind = _format_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if kind == "jsonl":
        with partial.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    else:
        rows = [
            {
                "id": r.id,
                "prompt": r.prompt,
                "reward_type": r.reward_type,
                "answer": r.answer,
                "tests": json.dumps(r.tests) if r.tests is not None else None,
                "response": r.response,
                "metadata": json.dumps(r.metadata) if r.metadata else None,
            }
            for r in records
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), partial)
    os.replace(partial, path)
    return path
