"""Tasks with verifiable answers: the record format shared by synthetic and user data, the JSONL/Parquet files that
hold them, the synthetic math and code generators, and train/held-out splits that never overlap (docs/policy.md)."""

from ring_async.tasks.answers import boxed_matches, extract_boxed
from ring_async.tasks.code_tasks import code_task
from ring_async.tasks.errors import TaskFormatError
from ring_async.tasks.io import iter_tasks, read_tasks, write_tasks
from ring_async.tasks.math_tasks import INSTRUCTION, math_task
from ring_async.tasks.record import REWARD_TYPES, TaskRecord
from ring_async.tasks.splits import TaskGenerationError, TaskSplits

__all__ = [
    "INSTRUCTION", "REWARD_TYPES", "TaskFormatError", "TaskGenerationError", "TaskRecord", "TaskSplits",
    "boxed_matches", "code_task", "extract_boxed", "iter_tasks", "math_task", "read_tasks", "write_tasks",
]
