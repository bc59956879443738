from ring_async.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseRequest(_message.Message):
    __slots__ = ("generator_id", "max_groups", "policy_version", "release_held")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUPS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    RELEASE_HELD_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    max_groups: int
    policy_version: int
    release_held: bool
    def __init__(self, generator_id: _Optional[str] = ..., max_groups: _Optional[int] = ..., policy_version: _Optional[int] = ..., release_held: _Optional[bool] = ...) -> None: ...

class LeaseReply(_message.Message):
    __slots__ = ("groups", "backpressure", "retry_after_s", "policy_version", "prompts_exhausted")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    BACKPRESSURE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    groups: _common_pb2.ArrowBatch
    backpressure: bool
    retry_after_s: float
    policy_version: int
    prompts_exhausted: bool
    def __init__(self, groups: _Optional[_Union[_common_pb2.ArrowBatch, _Mapping]] = ..., backpressure: _Optional[bool] = ..., retry_after_s: _Optional[float] = ..., policy_version: _Optional[int] = ..., prompts_exhausted: _Optional[bool] = ...) -> None: ...

class SubmitRolloutsRequest(_message.Message):
    __slots__ = ("rollouts", "submitter_id")
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    rollouts: _common_pb2.ArrowBatch
    submitter_id: str
    def __init__(self, rollouts: _Optional[_Union[_common_pb2.ArrowBatch, _Mapping]] = ..., submitter_id: _Optional[str] = ...) -> None: ...

class SubmitRolloutsReply(_message.Message):
    __slots__ = ("accepted", "duplicates", "late")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    late: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., late: _Optional[int] = ...) -> None: ...

class NextTrainBatchRequest(_message.Message):
    __slots__ = ("learner_id", "step_id", "learner_version", "wait_s")
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    LEARNER_VERSION_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    step_id: int
    learner_version: int
    wait_s: float
    def __init__(self, learner_id: _Optional[str] = ..., step_id: _Optional[int] = ..., learner_version: _Optional[int] = ..., wait_s: _Optional[float] = ...) -> None: ...

class TrainBatchReply(_message.Message):
    __slots__ = ("ready", "batch", "step_id")
    READY_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    batch: _common_pb2.ArrowBatch
    step_id: int
    def __init__(self, ready: _Optional[bool] = ..., batch: _Optional[_Union[_common_pb2.ArrowBatch, _Mapping]] = ..., step_id: _Optional[int] = ...) -> None: ...

class AcknowledgeStepsRequest(_message.Message):
    __slots__ = ("learner_id", "through_step_id")
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    THROUGH_STEP_ID_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    through_step_id: int
    def __init__(self, learner_id: _Optional[str] = ..., through_step_id: _Optional[int] = ...) -> None: ...

class AcknowledgeStepsReply(_message.Message):
    __slots__ = ("acknowledged_step", "outbox_steps")
    ACKNOWLEDGED_STEP_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_STEPS_FIELD_NUMBER: _ClassVar[int]
    acknowledged_step: int
    outbox_steps: int
    def __init__(self, acknowledged_step: _Optional[int] = ..., outbox_steps: _Optional[int] = ...) -> None: ...

class PolicyVersion(_message.Message):
    __slots__ = ("version", "learner_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    learner_id: str
    def __init__(self, version: _Optional[int] = ..., learner_id: _Optional[str] = ...) -> None: ...

class BrokerStatus(_message.Message):
    __slots__ = ("policy_version", "steps_emitted", "acknowledged_step", "outbox_steps", "queued_prompts", "prompts_exhausted", "leased_groups", "pool_rollouts", "pool_tokens", "pending_rollouts", "pending_tokens", "rollouts_by_outcome", "tokens_by_outcome", "rejected_rollouts", "rejected_tokens", "injected_rollouts_by_outcome")
    class RolloutsByOutcomeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TokensByOutcomeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RejectedRolloutsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RejectedTokensEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class InjectedRolloutsByOutcomeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_EMITTED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_STEP_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_STEPS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    LEASED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    POOL_ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    POOL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PENDING_ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_BY_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TOKENS_BY_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INJECTED_ROLLOUTS_BY_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    steps_emitted: int
    acknowledged_step: int
    outbox_steps: int
    queued_prompts: int
    prompts_exhausted: bool
    leased_groups: int
    pool_rollouts: int
    pool_tokens: int
    pending_rollouts: int
    pending_tokens: int
    rollouts_by_outcome: _containers.ScalarMap[str, int]
    tokens_by_outcome: _containers.ScalarMap[str, int]
    rejected_rollouts: _containers.ScalarMap[str, int]
    rejected_tokens: _containers.ScalarMap[str, int]
    injected_rollouts_by_outcome: _containers.ScalarMap[str, int]
    def __init__(self, policy_version: _Optional[int] = ..., steps_emitted: _Optional[int] = ..., acknowledged_step: _Optional[int] = ..., outbox_steps: _Optional[int] = ..., queued_prompts: _Optional[int] = ..., prompts_exhausted: _Optional[bool] = ..., leased_groups: _Optional[int] = ..., pool_rollouts: _Optional[int] = ..., pool_tokens: _Optional[int] = ..., pending_rollouts: _Optional[int] = ..., pending_tokens: _Optional[int] = ..., rollouts_by_outcome: _Optional[_Mapping[str, int]] = ..., tokens_by_outcome: _Optional[_Mapping[str, int]] = ..., rejected_rollouts: _Optional[_Mapping[str, int]] = ..., rejected_tokens: _Optional[_Mapping[str, int]] = ..., injected_rollouts_by_outcome: _Optional[_Mapping[str, int]] = ...) -> None: ...
