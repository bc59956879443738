from ring_async.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class LearnerStatus(_message.Message):
    __slots__ = ("learner_id", "step", "policy_version", "last_consumed_step", "last_checkpoint_step", "tokens_per_s", "last_step_metrics")
    class LastStepMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_CONSUMED_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_METRICS_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    step: int
    policy_version: int
    last_consumed_step: int
    last_checkpoint_step: int
    tokens_per_s: float
    last_step_metrics: _containers.ScalarMap[str, float]
    def __init__(self, learner_id: _Optional[str] = ..., step: _Optional[int] = ..., policy_version: _Optional[int] = ..., last_consumed_step: _Optional[int] = ..., last_checkpoint_step: _Optional[int] = ..., tokens_per_s: _Optional[float] = ..., last_step_metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...
