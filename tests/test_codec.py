import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ring_async.data import codec
from ring_async.data.schemas import PROMPT_GROUP, ROLLOUT, TRAIN_BATCH, rollout_id
from ring_async.data.synthetic import LengthSpread, synthetic_rollouts
from ring_async.data.train_batch import TrainBatch
from ring_async.errors import PayloadError


def _groups(n=2, size=3):
    return codec.build_batch(
        PROMPT_GROUP,
        {
            "group_id": [f"g{i}" for i in range(n)],
            "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": ["2+2?"] * n,
            "prompt_token_ids": codec.token_list_array([[1, 2, 3]] * n),
            "reward_type": ["math"] * n,
            "group_size": [size] * n,
            "priority": [0] * n,
            "lease_expires_at": [10.0] * n,
        },
    )


def _rollouts(seed=0):
    return synthetic_rollouts(_groups(), np.random.default_rng(seed), LengthSpread(low=1, high=40, median=10), masked_rate=0.2)


def test_round_trip_is_exact_and_zero_copy():
    batch = _rollouts()
    data = codec.encode(batch, ROLLOUT)
    decoded = codec.decode(data, ROLLOUT)
    assert decoded.equals(batch)
    assert decoded.num_rows == 6
    # Zero-copy: the token values of the decoded batch live inside the received buffer.
    buffer = pa.py_buffer(data)
    view = codec.decode(buffer, ROLLOUT)
    values = view.column("response_token_ids").values.buffers()[1]
    assert buffer.address <= values.address < buffer.address + buffer.size


def test_prompt_group_round_trip_and_nullable_columns_filled():
    groups = _groups()
    assert groups.column("answer").null_count == 2
    assert codec.decode(codec.encode(groups, PROMPT_GROUP), PROMPT_GROUP).equals(groups)


def test_wrong_schema_is_refused_with_both_names():
    data = codec.encode(_rollouts(), ROLLOUT)
    with pytest.raises(PayloadError, match=r"expected a train_batch/v1 payload, got rollout/v1"):
        codec.decode(data, TRAIN_BATCH)


def test_untagged_or_mismatched_columns_are_refused():
    plain = pa.RecordBatch.from_pydict({"x": [1, 2]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, plain.schema) as w:
        w.write_batch(plain)
    with pytest.raises(PayloadError, match="got an untagged schema"):
        codec.decode(sink.getvalue().to_pybytes(), ROLLOUT)
    # Tagged as a rollout, but a column has the wrong type.
    batch = _rollouts()
    fields = [pa.field(f.name, pa.float64() if f.name == "sample_index" else f.type, f.nullable) for f in ROLLOUT.arrow]
    schema = pa.schema(fields, metadata=ROLLOUT.with_metadata().metadata)
    arrays = [batch.column(f.name).cast(f.type) for f in fields]
    forged = pa.RecordBatch.from_arrays(arrays, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, forged.schema) as w:
        w.write_batch(forged)
    with pytest.raises(PayloadError, match=r"schema mismatch: wrong types \['sample_index: double"):
        codec.decode(sink.getvalue().to_pybytes(), ROLLOUT)


def test_every_truncation_is_a_payload_error():
    data = codec.encode(_rollouts(), ROLLOUT)
    for cut in range(0, len(data), 7):
        with pytest.raises(PayloadError):
            codec.decode(data[:cut], ROLLOUT)


@given(st.data())
def test_corrupted_bytes_never_crash_or_pass_unchecked(data):
    payload = bytearray(codec.encode(_rollouts(), ROLLOUT))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(1, 255)), min_size=1, max_size=8))
    for pos, xor in flips:
        payload[pos] ^= xor
    try:
        decoded = codec.decode(bytes(payload), ROLLOUT)
    except PayloadError:
        return
    # A flip inside token values cannot be detected by Arrow; what decodes must still satisfy every check.
    codec.check_batch(decoded, ROLLOUT)
    assert decoded.schema.remove_metadata() == ROLLOUT.arrow


def test_misaligned_logprobs_and_required_nulls_are_refused():
    batch = _rollouts()
    short = codec.token_list_array([[-0.1]] * batch.num_rows, pa.float32())
    with pytest.raises(PayloadError, match=r"row 0 has \d+ response_token_ids but 1 behaviour_logprobs"):
        codec.build_batch(ROLLOUT, {**batch.to_pydict(), "behaviour_logprobs": short})
    with pytest.raises(PayloadError, match=r"column 'verdict' has 1 null"):
        codec.build_batch(ROLLOUT, {**batch.to_pydict(), "verdict": [None] + ["correct"] * (batch.num_rows - 1)})
    with pytest.raises(PayloadError, match=r"required column 'rollout_id' is missing"):
        codec.build_batch(ROLLOUT, {k: v for k, v in batch.to_pydict().items() if k != "rollout_id"})
    with pytest.raises(PayloadError, match=r"unknown column"):
        codec.build_batch(ROLLOUT, {**batch.to_pydict(), "bogus": [1] * batch.num_rows})


def test_non_bytes_and_empty_inputs():
    with pytest.raises(PayloadError, match="expected bytes, got str"):
        codec.decode("hello", ROLLOUT)  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="empty payload"):
        codec.decode(b"", ROLLOUT)
    with pytest.raises(PayloadError, match="not a valid Arrow IPC stream"):
        codec.decode(b"\x00" * 64, ROLLOUT)


def test_train_batch_step_metadata_round_trips_and_lies_are_caught():
    rollouts = _rollouts()
    cols = {name: rollouts.column(name) for name in TRAIN_BATCH.arrow.names if name in rollouts.schema.names}
    n = rollouts.num_rows
    records = codec.build_batch(
        TRAIN_BATCH,
        {**cols, "advantage": [0.5] * n, "reward": [1.0] * n,
         "full_response_tokens": pa.compute.list_value_length(rollouts.column("response_token_ids")).cast(pa.int32())},
    )
    batch = TrainBatch(step_id=3, budget_tokens=100, cut="exact", policy_version=7, records=records)
    back = TrainBatch.from_ipc(batch.to_ipc())
    assert (back.step_id, back.budget_tokens, back.cut, back.policy_version) == (3, 100, "exact", 7)
    assert back.loss_tokens == batch.loss_tokens and back.records.equals(records)
    # A batch whose declared loss-token count disagrees with its contents is refused.
    meta = dict(TRAIN_BATCH.with_metadata({"step_id": "3", "budget_tokens": "100", "cut": "exact",
                                            "policy_version": "7", "loss_tokens": "1"}).metadata)
    sink = pa.BufferOutputStream()
    lying = records.replace_schema_metadata(meta)
    with pa.ipc.new_stream(sink, lying.schema) as w:
        w.write_batch(lying)
    with pytest.raises(PayloadError, match="declares 1 loss tokens"):
        TrainBatch.from_ipc(sink.getvalue().to_pybytes())


def test_rollout_id_is_group_slash_index():
    assert rollout_id("g7", 3) == "g7/3"
