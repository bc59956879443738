"""Exact accounting of every rollout and response token that reaches the broker.

A rollout is either *rejected* at the door (a duplicate, or late for a lease that already expired) and never
accepted, or *accepted*, after which it leaves through exactly one outcome or is still held. The ledger keeps both
rollout and response-token counts per outcome, so this always holds (``closure``)::

    accepted = trained + stale + zero_advantage + unverifiable + lease_expired + discarded + pooled + pending

and for tokens the same with ``cut_tail`` added: the tail of the response that straddled Φ in ``exact`` mode is
dropped, while the rollout itself counts as trained.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Ways an accepted rollout leaves the broker.
TRAINED = "trained"
STALE = "stale"
ZERO_ADVANTAGE = "zero_advantage"
UNVERIFIABLE = "unverifiable"
LEASE_EXPIRED = "lease_expired"
DISCARDED = "discarded"
CUT_TAIL = "cut_tail"  # tokens only
OUTCOMES = (TRAINED, STALE, ZERO_ADVANTAGE, UNVERIFIABLE, LEASE_EXPIRED, DISCARDED)

# Ways a submitted rollout is refused without being accepted.
DUPLICATE = "duplicate"
LATE = "late"  # its group's lease had expired (the prompt was requeued under a new group)
REJECTIONS = (DUPLICATE, LATE)


@dataclass
class Ledger:
    accepted_rollouts: int = 0
    accepted_tokens: int = 0
    rollouts: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    rejected_rollouts: Counter[str] = field(default_factory=Counter)
    rejected_tokens: Counter[str] = field(default_factory=Counter)

    def accept(self, tokens: int) -> None:
        self.accepted_rollouts += 1
        self.accepted_tokens += tokens

    def reject(self, reason: str, tokens: int) -> None:
        assert reason in REJECTIONS, reason
        self.rejected_rollouts[reason] += 1
        self.rejected_tokens[reason] += tokens

    def leave(self, outcome: str, tokens: int, rollouts: int = 1) -> None:
        assert outcome in OUTCOMES, outcome
        self.rollouts[outcome] += rollouts
        self.tokens[outcome] += tokens

    def cut(self, tokens: int) -> None:
        self.tokens[CUT_TAIL] += tokens

    def closure(self, pooled: tuple[int, int], pending: tuple[int, int]) -> dict[str, int]:
        """Imbalance (accepted minus accounted) of rollouts and tokens; both are zero when nothing is lost."""
        rollouts = sum(self.rollouts[o] for o in OUTCOMES) + pooled[0] + pending[0]
        tokens = sum(self.tokens[o] for o in OUTCOMES) + self.tokens[CUT_TAIL] + pooled[1] + pending[1]
        return {"rollouts": self.accepted_rollouts - rollouts, "tokens": self.accepted_tokens - tokens}

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {
            "rollouts": {"accepted": self.accepted_rollouts, **{o: self.rollouts[o] for o in OUTCOMES}},
            "tokens": {
                "accepted": self.accepted_tokens,
                **{o: self.tokens[o] for o in OUTCOMES},
                CUT_TAIL: self.tokens[CUT_TAIL],
            },
            "rejected_rollouts": {r: self.rejected_rollouts[r] for r in REJECTIONS},
            "rejected_tokens": {r: self.rejected_tokens[r] for r in REJECTIONS},
        }
