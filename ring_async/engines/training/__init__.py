"""Training: the learner core that turns one TrainBatch into exactly one optimizer step (DeepSpeed).

- :mod:`.micro_batches`: rows sharded over data-parallel ranks by tokens, packed into token-balanced micro-batches;
- :mod:`.forward`: one micro-batch through the policy (logprobs, entropy, reference KL, router losses) into the
  C3PO loss of :mod:`ring_async.c3po.loss`;
- :class:`LearnerCore`: the DeepSpeed engine, the gradient accounting that makes a step's gradient the
  single-process gradient of its batch, validation of incoming batches, metrics, checkpoint and resume;
- :mod:`.publisher`: new weights to every generator after a step; :mod:`.service`: the Learner gRPC service and the
  loop that pulls batches from the broker.

docs/learner.md describes the semantics and the guarantees.
"""

from ring_async.engines.training.errors import (
    BatchRejected,
    CheckpointError,
    LearnerError,
    PublishError,
    StepOrderError,
)
from ring_async.engines.training.learner import CheckpointInfo, LearnerCore, StepResult

__all__ = [
    "BatchRejected",
    "CheckpointError",
    "CheckpointInfo",
    "LearnerCore",
    "LearnerError",
    "PublishError",
    "StepOrderError",
    "StepResult",
]
