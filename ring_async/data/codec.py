"""Arrow IPC encoding and checked decoding of data-plane records.

``encode`` writes one record batch as an Arrow IPC stream; ``decode`` reads it back without copying the buffers and
refuses anything it cannot vouch for: bytes that are not an IPC stream, truncated or corrupted streams, a schema
other than the expected one, nulls in required columns, or token and logprob lists that disagree in length. Every
refusal is a :class:`~ring_async.errors.PayloadError` whose message says what was wrong; a decode never crashes the
receiver and never hands it garbage.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ring_async.data.schemas import ALIGNED_LISTS, SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY, RecordSchema
from ring_async.errors import PayloadError

# pyarrow raises these for malformed input; anything else escaping a decode is a bug in pyarrow or here.
_ARROW_ERRORS = (pa.ArrowException, OSError, EOFError, MemoryError, ValueError, TypeError, LookupError, OverflowError)


def token_list_array(sequences: Sequence[np.ndarray | Sequence[int]], value_type: pa.DataType = pa.int32()) -> pa.ListArray:
    """A list<value_type> column from per-row sequences: one concatenated values buffer plus offsets."""
    arrays = [np.asarray(s) for s in sequences]
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    if lengths.sum() > np.iinfo(np.int32).max:
        raise PayloadError("a list column holds more than 2^31 values; split the batch")
    np.cumsum(lengths, out=offsets[1:])
    dtype = value_type.to_pandas_dtype()
    values = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))


def build_batch(
    schema: RecordSchema, columns: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> pa.RecordBatch:
    """A record batch of ``schema`` from python lists, numpy or Arrow arrays; omitted nullable columns become null."""
    unknown = set(columns) - set(schema.arrow.names)
    if unknown:
        raise PayloadError(f"{schema.tag}: unknown column(s) {sorted(unknown)}")
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise PayloadError(f"{schema.tag}: columns have different lengths {lengths}")
    n_rows = next(iter(lengths.values()), 0)
    arrays = []
    for field in schema.arrow:
        if field.name in columns:
            try:
                arrays.append(pa.array(columns[field.name], type=field.type))
            except _ARROW_ERRORS as err:
                raise PayloadError(f"{schema.tag}: column {field.name!r} is not {field.type}: {err}") from None
        elif field.nullable:
            arrays.append(pa.nulls(n_rows, type=field.type))
        else:
            raise PayloadError(f"{schema.tag}: required column {field.name!r} is missing")
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema.with_metadata(dict(metadata or {})))
    check_batch(batch, schema)
    return batch


def encode(batch: pa.RecordBatch, schema: RecordSchema) -> bytes:
    """Serialise one record batch of ``schema`` as an Arrow IPC stream (checked first: garbage is never sent)."""
    check_batch(batch, schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode(data: bytes | memoryview | pa.Buffer, schema: RecordSchema) -> pa.RecordBatch:
    """Read an Arrow IPC stream holding records of ``schema``; zero-copy over ``data`` when it holds one batch."""
    if not isinstance(data, (bytes, bytearray, memoryview, pa.Buffer)):
        raise PayloadError(f"{schema.tag}: expected bytes, got {type(data).__name__}")
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    if buffer.size == 0:
        raise PayloadError(f"{schema.tag}: empty payload")
    try:
        reader = pa.ipc.open_stream(buffer)
        batches = list(reader)
        received = reader.schema
        _check_schema(received, schema)
        if not batches:
            batch = pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in received], schema=received)
        elif len(batches) == 1:
            batch = batches[0]
        else:
            batch = pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
        check_batch(batch, schema)
    except PayloadError:
        raise
    except _ARROW_ERRORS as err:
        # Corrupted metadata can surface anywhere in pyarrow (a bad UTF-8 name, an impossible length, ...).
        raise PayloadError(f"{schema.tag}: not a valid Arrow IPC stream (truncated or corrupted): {err}") from None
    return batch


def encode(batch: pa.RecordBatch, schema: RecordSchema) -> bytes:
    """Serialise one record batch of ``schema`` as an Arrow IPC stream (checked first: garbage is never sent)."""
    check_batch(batch, schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode(data: bytes | memoryview | pa.Buffer, schema: RecordSchema) -> pa.RecordBatch:
    """Read an Arrow IPC stream holding records of ``schema``; zero-copy over ``data`` when it holds one batch."""
    if not isinstance(data, (bytes, bytearray, memoryview, pa.Buffer)):
        raise PayloadError(f"{schema.tag}: expected bytes, got {type(data).__name__}")
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    if buffer.size == 0:
        raise PayloadError(f"{schema.tag}: empty payload")
    try:
        reader = pa.ipc.open_stream(buffer)
        batches = list(reader)
        received = reader.schema
        _check_schema(received, schema)
        if not batches:
            batch = pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in received], schema=received)
        elif len(batches) == 1:
            batch = batches[0]
        else:
            batch = pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
        check_batch(batch, schema)
    except PayloadError:
        raise
    except _ARROW_ERRORS as err:
        # Corrupted metadata can surface anywhere in pyarrow (a bad UTF-8 name, an impossible length, ...).
        raise PayloadError(f"{schema.tag}: not a valid Arrow IPC stream (truncated or corrupted): {err}") from None
    return batch


def schema_metadata(batch: pa.RecordBatch) -> dict[str, str]:
    """The string key/values riding in a batch's schema metadata (without the schema tag)."""
    meta = batch.schema.metadata or {}
    return {
        k.decode(): v.decode() for k, v in meta.items() if k not in (SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY)
    }


def _check_schema(received: pa.Schema, expected: RecordSchema) -> None:
    meta = received.metadata or {}
    name = meta.get(SCHEMA_NAME_KEY, b"").decode(errors="replace")
    version = meta.get(SCHEMA_VERSION_KEY, b"").decode(errors="replace")
    if name != expected.name or version != str(expected.version):
        got = f"{name}/v{version}" if name else "an untagged schema"
        raise PayloadError(f"expected a {expected.tag} payload, got {got}")
    if received.remove_metadata() != expected.arrow:
        missing = [f.name for f in expected.arrow if f.name not in received.names]
        extra = [n for n in received.names if n not in expected.arrow.names]
        wrong = [
            f"{f.name}: {received.field(f.name).type} (expected {f.type})"
            for f in expected.arrow
            if f.name in received.names and received.field(f.name).type != f.type
        ]
        details = "; ".join(
            part
            for part in (
                f"missing {missing}" if missing else "",
                f"unexpected {extra}" if extra else "",
                f"wrong types {wrong}" if wrong else "",
            )
            if part
        ) or "column order or nullability differs"
        raise PayloadError(f"{expected.tag}: schema mismatch: {details}")


def check_batch(batch: pa.RecordBatch, schema: RecordSchema) -> None:
    """Structural and semantic checks: valid buffers, no nulls where required, aligned token/logprob lists."""
    try:
        batch.validate(full=True)
    except _ARROW_ERRORS as err:
        raise PayloadError(f"{schema.tag}: corrupted record batch: {err}") from None
    for name in schema.required:
        column = batch.column(name)
        if column.null_count:
            raise PayloadError(f"{schema.tag}: column {name!r} has {column.null_count} null value(s)")
    aligned = ALIGNED_LISTS.get(schema.name)
    if aligned and batch.num_rows:
        a, b = (pc.list_value_length(batch.column(n)) for n in aligned)
        mismatch = pc.not_equal(a, b)
        if pc.any(mismatch).as_py():
            row = pc.index(mismatch, True).as_py()
            raise PayloadError(
                f"{schema.tag}: row {row} has {a[row].as_py()} {aligned[0]} but {b[row].as_py()} {aligned[1]}"
            )


def iter_rows(batch: pa.RecordBatch, columns: Iterable[str]) -> Iterable[tuple[Any, ...]]:
    """Python values of a few scalar columns, row by row (vectorised conversion, no per-cell Arrow calls)."""
    return zip(*(batch.column(name).to_pylist() for name in columns))
