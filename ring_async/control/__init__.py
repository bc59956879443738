"""The Control service: the public gRPC face of a running system (docs/control.md).

- :class:`ControlService` / :func:`serve_control`: co-hosted with the broker; prompts in, rewards to the verifiers,
  rollout streams out, status, pause/resume, checkpoints. Every call needs the bearer token.
- :class:`ControlClient`: the asyncio client.
"""

from ring_async.control.client import ControlClient, RolloutStream
from ring_async.control.errors import ControlRequestError, PeerError, PeerFailure
from ring_async.control.service import ControlService, serve_control

__all__ = ["ControlClient", "ControlRequestError", "ControlService", "PeerError", "PeerFailure", "RolloutStream",
           "serve_control"]
