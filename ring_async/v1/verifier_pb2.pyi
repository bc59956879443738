from ring_async.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerifyRequest(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _common_pb2.ArrowBatch
    def __init__(self, rollouts: _Optional[_Union[_common_pb2.ArrowBatch, _Mapping]] = ...) -> None: ...

class VerifyReply(_message.Message):
    __slots__ = ("rollouts", "verdicts")
    class VerdictsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _common_pb2.ArrowBatch
    verdicts: _containers.ScalarMap[str, int]
    def __init__(self, rollouts: _Optional[_Union[_common_pb2.ArrowBatch, _Mapping]] = ..., verdicts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class VerifierStatus(_message.Message):
    __slots__ = ("verifier_id", "reward_types", "verdicts", "queue_depth", "inflight", "awaiting_external", "latency_mean_s", "latency_p50_s", "latency_p95_s")
    class VerdictsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERIFIER_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_TYPES_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    AWAITING_EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MEAN_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_S_FIELD_NUMBER: _ClassVar[int]
    verifier_id: str
    reward_types: _containers.RepeatedScalarFieldContainer[str]
    verdicts: _containers.ScalarMap[str, int]
    queue_depth: int
    inflight: int
    awaiting_external: int
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    def __init__(self, verifier_id: _Optional[str] = ..., reward_types: _Optional[_Iterable[str]] = ..., verdicts: _Optional[_Mapping[str, int]] = ..., queue_depth: _Optional[int] = ..., inflight: _Optional[int] = ..., awaiting_external: _Optional[int] = ..., latency_mean_s: _Optional[float] = ..., latency_p50_s: _Optional[float] = ..., latency_p95_s: _Optional[float] = ...) -> None: ...
