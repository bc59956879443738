"""The code sandbox: every program in its own bubblewrap jail (namespaces, seccomp, rlimits, cgroups), tests run by
an in-jail harness, outputs compared on the host. Entry point: :class:`CodeJudge`."""

from ring_async.verifiers.sandbox.judge import CodeJudge, CodeResult
from ring_async.verifiers.sandbox.policy import HostSandbox, SandboxPolicy, probe

__all__ = ["CodeJudge", "CodeResult", "HostSandbox", "SandboxPolicy", "probe"]
