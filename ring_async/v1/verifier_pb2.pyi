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

class Reward(_message.Message):
    __slots__ = ("rollout_id", "reward", "unverifiable")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    UNVERIFIABLE_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reward: float
    unverifiable: bool
    def __init__(self, rollout_id: _Optional[str] = ..., reward: _Optional[float] = ..., unverifiable: _Optional[bool] = ...) -> None: ...

class SubmitRewardsRequest(_message.Message):
    __slots__ = ("rewards",)
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    rewards: _containers.RepeatedCompositeFieldContainer[Reward]
    def __init__(self, rewards: _Optional[_Iterable[_Union[Reward, _Mapping]]] = ...) -> None: ...

class SubmitRewardsReply(_message.Message):
    __slots__ = ("accepted", "already_rewarded", "unknown", "unknown_rollout_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REWARDED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ROLLOUT_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    already_rewarded: int
    unknown: int
    unknown_rollout_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., already_rewarded: _Optional[int] = ..., unknown: _Optional[int] = ..., unknown_rollout_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamRolloutsRequest(_message.Message):
    __slots__ = ("reward_types", "pending_external_only")
    REWARD_TYPES_FIELD_NUMBER: _ClassVar[int]
    PENDING_EXTERNAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    reward_types: _containers.RepeatedScalarFieldContainer[str]
    pending_external_only: bool
    def __init__(self, reward_types: _Optional[_Iterable[str]] = ..., pending_external_only: _Optional[bool] = ...) -> None: ...

class StreamRolloutsReply(_message.Message):
    __slots__ = ("rollouts", "skipped")
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    rollouts: _common_pb2.ArrowBatch
    skipped: int
    def __init__(self, rollouts: _Optional[_Union[_common_pb2.ArrowBatch, _Mapping]] = ..., skipped: _Optional[int] = ...) -> None: ...
