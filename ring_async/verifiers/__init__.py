"""Reward verifiers: the math checker (Math-Verify behind our front end and a worker pool with hard deadlines), the
code sandbox (bubblewrap jails), and the Verifier core that routes rollouts by reward type. ``.service``: the Verifier
gRPC service over the core (imported from there: it pulls in gRPC). docs/verifiers.md."""

from ring_async.verifiers.core import RolloutToScore, ScoredRollout, VerifierCore
from ring_async.verifiers.errors import TestsFormatError, VerifierBusyError, VerifierClosedError, VerifierError
from ring_async.verifiers.math_checker import GoldReport, MathChecker, MathResult
from ring_async.verifiers.sandbox import CodeJudge, CodeResult, SandboxPolicy
from ring_async.verifiers.tests_format import TestsSpec, load_tests_file, parse_tests

__all__ = [
    "CodeJudge", "CodeResult", "GoldReport", "MathChecker", "MathResult", "RolloutToScore", "SandboxPolicy",
    "ScoredRollout", "TestsFormatError", "TestsSpec", "VerifierBusyError", "VerifierClosedError", "VerifierCore",
    "VerifierError", "load_tests_file", "parse_tests",
]
