from ring_async.v1 import broker_pb2 as _broker_pb2
from ring_async.v1 import common_pb2 as _common_pb2
from ring_async.v1 import generator_pb2 as _generator_pb2
from ring_async.v1 import learner_pb2 as _learner_pb2
from ring_async.v1 import verifier_pb2 as _verifier_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union
from ring_async.v1.verifier_pb2 import VerifyRequest as VerifyRequest
from ring_async.v1.verifier_pb2 import VerifyReply as VerifyReply
from ring_async.v1.verifier_pb2 import VerifierStatus as VerifierStatus
from ring_async.v1.verifier_pb2 import Reward as Reward
from ring_async.v1.verifier_pb2 import SubmitRewardsRequest as SubmitRewardsRequest
from ring_async.v1.verifier_pb2 import SubmitRewardsReply as SubmitRewardsReply
from ring_async.v1.verifier_pb2 import StreamRolloutsRequest as StreamRolloutsRequest
from ring_async.v1.verifier_pb2 import StreamRolloutsReply as StreamRolloutsReply

DESCRIPTOR: _descriptor.FileDescriptor

class Prompt(_message.Message):
    __slots__ = ("prompt_id", "text", "reward_type", "answer", "tests", "priority", "group_size", "metadata")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REWARD_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    text: str
    reward_type: str
    answer: str
    tests: str
    priority: int
    group_size: int
    metadata: bytes
    def __init__(self, prompt_id: _Optional[str] = ..., text: _Optional[str] = ..., reward_type: _Optional[str] = ..., answer: _Optional[str] = ..., tests: _Optional[str] = ..., priority: _Optional[int] = ..., group_size: _Optional[int] = ..., metadata: _Optional[bytes] = ...) -> None: ...

class SubmitPromptsRequest(_message.Message):
    __slots__ = ("prompts",)
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[Prompt]
    def __init__(self, prompts: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ...) -> None: ...

class SubmitPromptsReply(_message.Message):
    __slots__ = ("prompt_ids",)
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    prompt_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prompt_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SystemStatus(_message.Message):
    __slots__ = ("run_id", "uptime_s", "pause", "broker", "learners", "generators", "verifiers", "unreachable", "max_staleness", "pool_staleness", "generated_tokens_per_s", "trained_tokens_per_s", "steps_per_min")
    class UnreachableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    GENERATORS_FIELD_NUMBER: _ClassVar[int]
    VERIFIERS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    POOL_STALENESS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    TRAINED_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_MIN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    uptime_s: float
    pause: _common_pb2.PauseState
    broker: _broker_pb2.BrokerStatus
    learners: _containers.RepeatedCompositeFieldContainer[_learner_pb2.LearnerStatus]
    generators: _containers.RepeatedCompositeFieldContainer[_generator_pb2.GeneratorStatus]
    verifiers: _containers.RepeatedCompositeFieldContainer[_verifier_pb2.VerifierStatus]
    unreachable: _containers.ScalarMap[str, str]
    max_staleness: int
    pool_staleness: int
    generated_tokens_per_s: float
    trained_tokens_per_s: float
    steps_per_min: float
    def __init__(self, run_id: _Optional[str] = ..., uptime_s: _Optional[float] = ..., pause: _Optional[_Union[_common_pb2.PauseState, _Mapping]] = ..., broker: _Optional[_Union[_broker_pb2.BrokerStatus, _Mapping]] = ..., learners: _Optional[_Iterable[_Union[_learner_pb2.LearnerStatus, _Mapping]]] = ..., generators: _Optional[_Iterable[_Union[_generator_pb2.GeneratorStatus, _Mapping]]] = ..., verifiers: _Optional[_Iterable[_Union[_verifier_pb2.VerifierStatus, _Mapping]]] = ..., unreachable: _Optional[_Mapping[str, str]] = ..., max_staleness: _Optional[int] = ..., pool_staleness: _Optional[int] = ..., generated_tokens_per_s: _Optional[float] = ..., trained_tokens_per_s: _Optional[float] = ..., steps_per_min: _Optional[float] = ...) -> None: ...
