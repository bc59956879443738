"""The Arrow-in-bytes convention: data-plane record batches in and out of ``ring_async.v1.ArrowBatch`` messages.

The ``schema`` tag and ``num_rows`` of the message are checked against the payload, so a receiver refuses a batch of
the wrong kind, or one whose envelope and contents disagree, with a PayloadError (INVALID_ARGUMENT on the wire).
"""

from __future__ import annotations

import pyarrow as pa

from ring_async.data import codec
from ring_async.data.schemas import RecordSchema
from ring_async.errors import PayloadError
from ring_async.v1 import common_pb2


def pack_batch(batch: pa.RecordBatch, schema: RecordSchema) -> common_pb2.ArrowBatch:
    """``batch`` (checked against ``schema``) as an ArrowBatch message."""
    return common_pb2.ArrowBatch(ipc=codec.encode(batch, schema), schema=schema.tag, num_rows=batch.num_rows)


def unpack_batch(message: common_pb2.ArrowBatch, schema: RecordSchema) -> pa.RecordBatch:
    """The record batch inside ``message``, which must hold ``schema`` records; PayloadError otherwise."""
    if message.schema != schema.tag:
        got = repr(message.schema) if message.schema else "no schema tag"
        raise PayloadError(f"expected a {schema.tag} batch, got {got}")
    batch = codec.decode(message.ipc, schema)
    if batch.num_rows != message.num_rows:
        raise PayloadError(
            f"{schema.tag}: num_rows says {message.num_rows} but the payload holds {batch.num_rows} rows"
        )
    return batch
