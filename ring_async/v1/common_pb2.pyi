from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ArrowBatch(_message.Message):
    __slots__ = ("ipc", "schema", "num_rows")
    IPC_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    ipc: bytes
    schema: str
    num_rows: int
    def __init__(self, ipc: _Optional[bytes] = ..., schema: _Optional[str] = ..., num_rows: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseState(_message.Message):
    __slots__ = ("paused", "reason", "paused_at_unix_s")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    reason: str
    paused_at_unix_s: float
    def __init__(self, paused: _Optional[bool] = ..., reason: _Optional[str] = ..., paused_at_unix_s: _Optional[float] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("tag",)
    TAG_FIELD_NUMBER: _ClassVar[int]
    tag: str
    def __init__(self, tag: _Optional[str] = ...) -> None: ...

class CheckpointReply(_message.Message):
    __slots__ = ("path", "step", "policy_version", "last_consumed_step")
    PATH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_CONSUMED_STEP_FIELD_NUMBER: _ClassVar[int]
    path: str
    step: int
    policy_version: int
    last_consumed_step: int
    def __init__(self, path: _Optional[str] = ..., step: _Optional[int] = ..., policy_version: _Optional[int] = ..., last_consumed_step: _Optional[int] = ...) -> None: ...
