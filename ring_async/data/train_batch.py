"""The unit of training: one optimizer step's responses, as the broker emits and the learner consumes them."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ring_async.data import codec
from ring_async.data.schemas import TRAIN_BATCH
from ring_async.errors import PayloadError

_STEP_FIELDS = ("step_id", "budget_tokens", "cut", "policy_version", "loss_tokens")


@dataclass(frozen=True)
class TrainBatch:
    """Records of schema ``train_batch`` plus the step facts that travel in its schema metadata.

    ``loss_tokens`` is the number of response tokens that carry loss; in ``exact`` mode it equals ``budget_tokens``
    (Φ). ``policy_version`` is the learner version the broker saw when it emitted the batch.
    """

    step_id: int
    budget_tokens: int
    cut: str
    policy_version: int
    records: pa.RecordBatch

    @property
    def loss_tokens(self) -> int:
        return int(pc.sum(pc.list_value_length(self.records.column("response_token_ids"))).as_py() or 0)

    @property
    def num_sequences(self) -> int:
        return self.records.num_rows

    def to_ipc(self) -> bytes:
        meta = {
            "step_id": str(self.step_id),
            "budget_tokens": str(self.budget_tokens),
            "cut": self.cut,
            "policy_version": str(self.policy_version),
            "loss_tokens": str(self.loss_tokens),
        }
        return codec.encode(self.records.replace_schema_metadata(TRAIN_BATCH.with_metadata(meta).metadata), TRAIN_BATCH)

    @classmethod
    def from_ipc(cls, data: bytes) -> "TrainBatch":
        records = codec.decode(data, TRAIN_BATCH)
        meta = codec.schema_metadata(records)
        missing = [k for k in _STEP_FIELDS if k not in meta]
        if missing:
            raise PayloadError(f"train_batch/v1: step metadata missing {missing}")
        try:
            batch = cls(
                step_id=int(meta["step_id"]),
                budget_tokens=int(meta["budget_tokens"]),
                cut=meta["cut"],
                policy_version=int(meta["policy_version"]),
                records=records,
            )
            declared = int(meta["loss_tokens"])
        except ValueError as err:
            raise PayloadError(f"train_batch/v1: bad step metadata: {err}") from None
        if batch.loss_tokens != declared:
            raise PayloadError(
                f"train_batch/v1: step {batch.step_id} declares {declared} loss tokens "
                f"but carries {batch.loss_tokens}"
            )
        return batch
