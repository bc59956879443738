from ring_async.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WeightChunk(_message.Message):
    __slots__ = ("policy_version", "bucket_index", "bucket_count", "tensor_names", "format", "data", "sha256")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_INDEX_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    TENSOR_NAMES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    bucket_index: int
    bucket_count: int
    tensor_names: _containers.RepeatedScalarFieldContainer[str]
    format: str
    data: bytes
    sha256: str
    def __init__(self, policy_version: _Optional[int] = ..., bucket_index: _Optional[int] = ..., bucket_count: _Optional[int] = ..., tensor_names: _Optional[_Iterable[str]] = ..., format: _Optional[str] = ..., data: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class UpdateWeightsReply(_message.Message):
    __slots__ = ("policy_version", "buckets", "tensors", "bytes", "load_s")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    buckets: int
    tensors: int
    bytes: int
    load_s: float
    def __init__(self, policy_version: _Optional[int] = ..., buckets: _Optional[int] = ..., tensors: _Optional[int] = ..., bytes: _Optional[int] = ..., load_s: _Optional[float] = ...) -> None: ...

class GeneratorStatus(_message.Message):
    __slots__ = ("generator_id", "engine", "policy_version", "pause", "inflight_groups", "inflight_samples", "rollouts_generated", "tokens_generated", "tokens_per_s", "weight_updates", "weight_updates_refused")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_GENERATED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_GENERATED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_UPDATES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_UPDATES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    engine: str
    policy_version: int
    pause: _common_pb2.PauseState
    inflight_groups: int
    inflight_samples: int
    rollouts_generated: int
    tokens_generated: int
    tokens_per_s: float
    weight_updates: int
    weight_updates_refused: int
    def __init__(self, generator_id: _Optional[str] = ..., engine: _Optional[str] = ..., policy_version: _Optional[int] = ..., pause: _Optional[_Union[_common_pb2.PauseState, _Mapping]] = ..., inflight_groups: _Optional[int] = ..., inflight_samples: _Optional[int] = ..., rollouts_generated: _Optional[int] = ..., tokens_generated: _Optional[int] = ..., tokens_per_s: _Optional[float] = ..., weight_updates: _Optional[int] = ..., weight_updates_refused: _Optional[int] = ...) -> None: ...
