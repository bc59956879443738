"""The C3PO budget broker, in process: prompts in, fixed-token train batches out.

The broker leases prompt groups to generators, takes back scored rollouts exactly once, assembles groups, computes
their advantages when the last member arrives, holds usable rollouts in a pool ordered by group completion, and
emits a :class:`~ring_async.data.train_batch.TrainBatch` of exactly Φ loss tokens (``exact`` cut) whenever the pool
holds enough. Every rollout and token that leaves is counted in the :class:`~ring_async.broker.ledger.Ledger`.

It is single-threaded and has no I/O: the gRPC service and the actor wrap it, and the write-ahead log hooks onto its
inputs. Time comes from an injected clock, so a run is deterministic for a seed and a sequence of calls.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ring_async.broker import ledger as L
from ring_async.broker.prompts import DatasetStream, Prompt, PromptQueue
from ring_async.c3po.advantages import group_advantages, is_zero_advantage
from ring_async.c3po.budget import select_budget
from ring_async.config import RingConfig
from ring_async.data import codec
from ring_async.data.schemas import MASKED_VERDICTS, PROMPT_GROUP, ROLLOUT, TRAIN_BATCH, rollout_id
from ring_async.data.train_batch import TrainBatch
from ring_async.errors import BrokerError

_ROLLOUT_KEYS = (
    "rollout_id",
    "group_id",
    "prompt_id",
    "sample_index",
    "reward",
    "verdict",
    "policy_version_first",
    "policy_version_last",
)
_CARRIED_COLUMNS = (
    "rollout_id",
    "group_id",
    "prompt_id",
    "prompt_token_ids",
    "response_token_ids",
    "behaviour_logprobs",
    "reward",
    "policy_version_first",
    "policy_version_last",
)


@dataclass(slots=True)
class _Held:
    """An accepted rollout: its scalar facts, and its row in the (zero-copy) batch it arrived in."""

    batch: pa.RecordBatch
    row: int
    sample_index: int
    tokens: int
    reward: float | None
    version_first: int
    injected: bool = False
    advantage: float = 0.0


@dataclass
class _OpenGroup:
    group_id: str
    prompt: Prompt
    size: int
    expires_at: float
    holder: str  # the generator it is leased to
    received: dict[int, _Held] = field(default_factory=dict)

    @property
    def received_tokens(self) -> int:
        return sum(h.tokens for h in self.received.values())


# How soon a generator held back (see Broker._lease_hold) should ask again: a hold ends the moment a step is emitted
# or the learner reports its version, and a slow re-lease would be idle time charged to the run, not a property of it.
HOLD_RETRY_S = 0.05


@dataclass(frozen=True)
class LeaseResult:
    groups: pa.RecordBatch
    backpressure: bool
    policy_version: int
    retry_after_s: float = 0.0  # advised wait before the next lease; 0: the caller's own default
    released: int = 0  # groups of this generator's earlier process that the call ended (release_held)


@dataclass(frozen=True)
class SubmitResult:
    accepted: int
    duplicates: int
    late: int


class Broker:
    def __init__(
        self,
        config: RingConfig,
        dataset: Iterable[Prompt] | Iterator[Prompt] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._algo = config.algorithm
        self._cfg = config.broker
        if isinstance(dataset, Sequence):
            dataset = DatasetStream(dataset, seed=config.run.seed, shuffle=self._cfg.shuffle_prompts)
        self._queue = PromptQueue(iter(dataset) if dataset is not None else None)
        self._clock = clock
        self.ledger = L.Ledger()
        self.policy_version = 0
        self.steps_emitted = 0
        self._open: dict[str, _OpenGroup] = {}
        # Closed groups stay known so that a late or repeated rollout is recognised (one id per group, not per rollout).
        self._completed: set[str] = set()
        self._expired: set[str] = set()
        self._pool: deque[_Held] = deque()
        self._pool_tokens = 0
        # Rollouts of injected prompts by outcome ("accepted" and the ledger's outcomes): whether what a client
        # submitted was trained on, or why not.
        self.injected_rollouts: Counter[str] = Counter()
        self._group_seq = itertools.count()
        self._injected_seq = itertools.count()
        # run.mode sync (the on-policy baseline): generation and training take turns; see _lease_hold.
        self._sync = config.run.mode == "sync"
        # Train batches emitted at the current policy version (the learner is training them): a rollout begun now
        # can no longer join them, only the steps of the versions after.
        self._steps_at_version = 0
        # Measured over completed groups, for _lease_hold's projection of what the groups out will add to the pool.
        self._completed_tokens = 0
        self._completed_rollouts = 0
        self._pooled_from_completed = 0

    # ----------------------------------------------------------------- prompts and leases

    def inject(self, prompts: Iterable[Prompt]) -> list[str]:
        """Queue prompts submitted while running; returns their ids (assigned when a prompt has none)."""
        ids = []
        for prompt in prompts:
            prompt = replace(prompt, injected=True,
                             prompt_id=prompt.prompt_id or f"injected-{next(self._injected_seq)}")
            if prompt.group_size is not None and prompt.group_size < 1:
                raise BrokerError(f"prompt {prompt.prompt_id}: group_size must be at least 1, got {prompt.group_size}")
            self._queue.inject(prompt)
            ids.append(prompt.prompt_id)
        return ids

    def lease(self, generator_id: str, max_groups: int, release_held: bool = False) -> LeaseResult:
        """Up to ``max_groups`` prompt groups for a generator, fewer (or none) under back-pressure. ``release_held``:
        the generator has just (re)started, so the groups still leased to its id died with its previous process;
        they end now, as expired leases, instead of at ``lease_timeout_s``."""
        if max_groups < 1:
            raise BrokerError(f"max_groups must be at least 1, got {max_groups}")
        self.expire_leases()
        released = self._end_leases([g for g in self._open.values() if g.holder == generator_id]) if release_held else 0
        if self._lease_hold():
            return LeaseResult(_prompt_group_batch([]), True, self.policy_version, retry_after_s=HOLD_RETRY_S,
                               released=released)
        now = self._clock()
        leased: list[_OpenGroup] = []
        backpressure = False
        while len(leased) < max_groups:
            if self._over_capacity() or self._lease_hold():
                backpressure = True
                break
            prompt = self._queue.pop()
            if prompt is None:
                break
            group = _OpenGroup(
                group_id=f"g{next(self._group_seq):09d}",
                prompt=prompt,
                size=prompt.group_size or self._cfg.group_size,
                expires_at=now + self._cfg.lease_timeout_s,
                holder=generator_id,
            )
            self._open[group.group_id] = group
            leased.append(group)
        return LeaseResult(_prompt_group_batch(leased), backpressure, self.policy_version, released=released)

    def _over_capacity(self) -> bool:
        if len(self._open) >= self._cfg.max_inflight_groups:
            return True
        expected_missing = sum(
            (g.size - len(g.received)) * self._cfg.expected_response_tokens for g in self._open.values()
        )
        held = self._pool_tokens + self.pending_tokens + expected_missing
        return held >= self._cfg.max_pool_tokens

    def _lease_hold(self) -> bool:
        """No new lease while the steps a rollout begun now could still join are already spoken for. Begun at policy
        version V, it is usable by the steps of versions V … V + max_staleness, less those already emitted (in
        training) at V: ``open_steps`` of Φ tokens. The pool's rollouts usable by the first of them, plus what the
        groups out are projected to add, fill those first (the pool is trained in order); past that, another
        group could only add stale tokens, and its decoding would take compute from the learner where they share
        machines. sync mode (max_staleness 0) is the same rule: one step's worth is leased at a time, and nothing
        while that step trains, so generation and training take turns. The projection uses the measured mean
        response length and the measured share of tokens that reach the pool (zero-advantage groups and masked rows
        do not)."""
        if not (self._sync or self._cfg.lease_within_staleness):
            return False
        open_steps = self._algo.max_staleness + 1 - self._steps_at_version
        if open_steps <= 0:
            return True
        next_open = self.policy_version + self._steps_at_version  # the first step's version a new rollout can join
        pooled = sum(h.tokens for h in self._pool if not self._is_stale(h, at_version=next_open))
        if not self._completed_rollouts:
            mean_tokens, usable_share = float(self._cfg.expected_response_tokens), 1.0
        else:
            mean_tokens = self._completed_tokens / self._completed_rollouts
            usable_share = self._pooled_from_completed / max(1, self._completed_tokens)
        outstanding = sum(g.received_tokens + (g.size - len(g.received)) * mean_tokens for g in self._open.values())
        return pooled + outstanding * usable_share >= open_steps * self._algo.budget_tokens

    def expire_leases(self) -> int:
        """Requeue the prompts of groups whose lease ran out; their partial rollouts leave as ``lease_expired``."""
        now = self._clock()
        return self._end_leases([g for g in self._open.values() if g.expires_at <= now])

    def _end_leases(self, expired: list[_OpenGroup]) -> int:
        for group in expired:
            del self._open[group.group_id]
            self._expired.add(group.group_id)
            if group.received:
                self._leave(L.LEASE_EXPIRED, list(group.received.values()))
            self._queue.requeue(group.prompt)
        return len(expired)

    # ----------------------------------------------------------------- rollouts in

    def submit(self, rollouts: pa.RecordBatch) -> SubmitResult:
        """Accept scored rollouts, exactly once each. A batch with any invalid row is refused whole."""
        codec.check_batch(rollouts, ROLLOUT)
        self.expire_leases()
        rollouts = rollouts.replace_schema_metadata(None)
        rows = list(codec.iter_rows(rollouts, _ROLLOUT_KEYS))
        lengths = pc.list_value_length(rollouts.column("response_token_ids")).to_numpy(zero_copy_only=False)
        self._validate(rows)
        accepted = duplicates = late = 0
        seen_in_batch: set[str] = set()
        for row, (rid, gid, _pid, index, reward, verdict, v_first, _v_last) in enumerate(rows):
            tokens = int(lengths[row])
            if gid in self._expired:
                self.ledger.reject(L.LATE, tokens)
                late += 1
                continue
            group = self._open.get(gid)
            if group is None or index in group.received or rid in seen_in_batch:
                self.ledger.reject(L.DUPLICATE, tokens)
                duplicates += 1
                continue
            seen_in_batch.add(rid)
            masked = reward is None or verdict in MASKED_VERDICTS
            group.received[index] = _Held(rollouts, row, index, tokens, None if masked else float(reward), v_first,
                                          group.prompt.injected)
            self.ledger.accept(tokens)
            self._count_injected("accepted", (group.received[index],))
            accepted += 1
            if len(group.received) == group.size:
                self._complete(group)
        return SubmitResult(accepted, duplicates, late)

    def _validate(self, rows: list[tuple]) -> None:
        for rid, gid, pid, index, reward, verdict, v_first, v_last in rows:
            group = self._open.get(gid)
            if group is None and gid not in self._completed and gid not in self._expired:
                raise BrokerError(f"rollout {rid}: unknown group {gid!r} (never leased by this broker)")
            if rid != rollout_id(gid, index):
                raise BrokerError(f"rollout {rid}: id must be {rollout_id(gid, index)!r} (group/sample_index)")
            if group is not None:
                if not 0 <= index < group.size:
                    raise BrokerError(f"rollout {rid}: sample_index {index} outside group of {group.size}")
                if pid != group.prompt.prompt_id:
                    raise BrokerError(f"rollout {rid}: prompt {pid!r} but group {gid} is for {group.prompt.prompt_id!r}")
            if v_last < v_first:
                raise BrokerError(f"rollout {rid}: policy_version_last {v_last} < policy_version_first {v_first}")
            if reward is None and verdict not in MASKED_VERDICTS:
                raise BrokerError(f"rollout {rid}: no reward with verdict {verdict!r}; verify before submitting")
            if reward is not None and not np.isfinite(reward):
                raise BrokerError(f"rollout {rid}: reward {reward} is not finite")

    def _complete(self, group: _OpenGroup) -> None:
        del self._open[group.group_id]
        self._completed.add(group.group_id)
        members = [group.received[i] for i in sorted(group.received)]
        self._completed_rollouts += len(members)
        self._completed_tokens += sum(h.tokens for h in members)
        verified = [h for h in members if h.reward is not None]
        for h in members:
            if h.reward is None:
                # Stale first: a sample the generator stopped because it went stale is masked, and stale is why.
                outcome = L.STALE if self._is_stale(h) else L.UNVERIFIABLE
                self._leave(outcome, (h,))
        rewards = [h.reward for h in verified]
        if self._algo.filter_zero_adv and is_zero_advantage(rewards):
            if verified:
                self._leave(L.ZERO_ADVANTAGE, verified)
            return
        # Advantages over the whole verified group, before any staleness drop or budget cut (DESIGN §3).
        advantages = group_advantages(rewards, self._algo.advantage_norm, self._algo.advantage_eps)
        usable = []
        for h, adv in zip(verified, advantages):
            h.advantage = float(adv)
            if self._is_stale(h):
                self._leave(L.STALE, (h,))
            else:
                usable.append(h)
        self._pool_group(usable)

    def _pool_group(self, members: list[_Held]) -> None:
        """Add a completed group's usable members to the pool, together and in sample order: at the end
        (``select_order: completed``), or after the last pooled rollout of the same or an older first version
        (``version``: what goes stale soonest is trained first)."""
        if not members:
            return
        at = len(self._pool)
        if self._algo.select_order == "version":
            oldest = min(h.version_first for h in members)
            while at > 0 and self._pool[at - 1].version_first > oldest:
                at -= 1
        for offset, h in enumerate(members):
            self._pool.insert(at + offset, h)
        tokens = sum(h.tokens for h in members)
        self._pool_tokens += tokens
        self._pooled_from_completed += tokens

    # ----------------------------------------------------------------- policy versions and staleness

    def _is_stale(self, held: _Held, at_version: int | None = None) -> bool:
        """Beyond the staleness bound now, or for a step of ``at_version``."""
        version = self.policy_version if at_version is None else at_version
        return version - held.version_first > self._algo.max_staleness

    def set_policy_version(self, version: int) -> int:
        """The learner published ``version``: drop pooled rollouts now beyond the staleness bound; returns how many."""
        if version < self.policy_version:
            raise BrokerError(f"policy version went backwards: {version} < {self.policy_version}")
        if version > self.policy_version:
            self._steps_at_version = 0
        self.policy_version = version
        kept: deque[_Held] = deque()
        dropped = 0
        for h in self._pool:
            if self._is_stale(h):
                self._leave(L.STALE, (h,))
                self._pool_tokens -= h.tokens
                dropped += 1
            else:
                kept.append(h)
        self._pool = kept
        return dropped

    # ----------------------------------------------------------------- train batches out

    def next_batch(self) -> TrainBatch | None:
        """One fixed-token train batch if the pool holds at least Φ usable tokens, else None. In sync mode also only
        once no leased group is still being generated: every row of a step then comes from the policy it trains."""
        self.expire_leases()
        budget = self._algo.budget_tokens
        if self._pool_tokens < budget or (self._sync and self._open):
            return None
        lengths = []
        running = 0
        for h in self._pool:
            lengths.append(h.tokens)
            running += h.tokens
            if running >= budget:
                break
        selection = select_budget(lengths, budget, self._algo.cut)
        assert selection is not None  # the pool holds at least Φ tokens
        chosen = [self._pool.popleft() for _ in range(selection.count)]
        self._pool_tokens -= sum(h.tokens for h in chosen)
        takes = [selection.take(i, h.tokens) for i, h in enumerate(chosen)]
        for h, take in zip(chosen, takes):
            self._leave(L.TRAINED, (h,), tokens=take)
            if take < h.tokens:
                self.ledger.cut(h.tokens - take)
        if self._algo.leftovers == "discard":
            self._leave(L.DISCARDED, list(self._pool))
            self._pool.clear()
            self._pool_tokens = 0
        batch = TrainBatch(
            step_id=self.steps_emitted,
            budget_tokens=budget,
            cut=self._algo.cut,
            policy_version=self.policy_version,
            records=_train_records(chosen, takes),
        )
        self.steps_emitted += 1
        self._steps_at_version += 1
        return batch

    # ----------------------------------------------------------------- introspection

    def _leave(self, outcome: str, holds: Sequence[_Held], tokens: int | None = None) -> None:
        """Rollouts leave the broker's custody: the ledger counts them (``tokens``, when only part of one is trained)
        and so does the injected tally."""
        self.ledger.leave(outcome, sum(h.tokens for h in holds) if tokens is None else tokens, len(holds))
        self._count_injected(outcome, holds)

    def _count_injected(self, outcome: str, holds: Iterable[_Held]) -> None:
        n = sum(1 for h in holds if h.injected)
        if n:
            self.injected_rollouts[outcome] += n

    @property
    def pool_tokens(self) -> int:
        return self._pool_tokens

    def pool_staleness(self) -> int:
        """Policy version minus the oldest first version of a pooled rollout; 0 for an empty pool. Safe to call from
        another thread (a metrics scrape): list() copies the pool in one step."""
        versions = [held.version_first for held in list(self._pool)]
        return self.policy_version - min(versions) if versions else 0

    @property
    def pool_rollouts(self) -> int:
        return len(self._pool)

    @property
    def pending_tokens(self) -> int:
        return sum(g.received_tokens for g in self._open.values())

    @property
    def pending_rollouts(self) -> int:
        return sum(len(g.received) for g in self._open.values())

    @property
    def leased_groups(self) -> int:
        return len(self._open)

    @property
    def queued_prompts(self) -> int:
        return len(self._queue)

    @property
    def prompts_exhausted(self) -> bool:
        return self._queue.exhausted

    def closure(self) -> dict[str, int]:
        """Accepted minus accounted-for rollouts and tokens: zero unless something was lost or counted twice."""
        return self.ledger.closure(
            pooled=(self.pool_rollouts, self.pool_tokens), pending=(self.pending_rollouts, self.pending_tokens)
        )

    def status(self) -> dict:
        return {
            "policy_version": self.policy_version,
            "steps_emitted": self.steps_emitted,
            "queued_prompts": self.queued_prompts,
            "leased_groups": self.leased_groups,
            "pool_tokens": self.pool_tokens,
            "pool_rollouts": self.pool_rollouts,
            "pending_rollouts": self.pending_rollouts,
            "injected_rollouts": dict(self.injected_rollouts),
            **self.ledger.snapshot(),
        }


def _prompt_group_batch(groups: list[_OpenGroup]) -> pa.RecordBatch:
    return codec.build_batch(
        PROMPT_GROUP,
        {
            "group_id": [g.group_id for g in groups],
            "prompt_id": [g.prompt.prompt_id for g in groups],
            "prompt": [g.prompt.prompt for g in groups],
            "prompt_token_ids": codec.token_list_array([g.prompt.prompt_token_ids for g in groups]),
            "reward_type": [g.prompt.reward_type for g in groups],
            "answer": [g.prompt.answer for g in groups],
            "tests": [g.prompt.tests for g in groups],
            "group_size": [g.size for g in groups],
            "priority": [g.prompt.priority for g in groups],
            "lease_expires_at": [g.expires_at for g in groups],
            "metadata": [g.prompt.metadata for g in groups],
        },
    )


def _train_records(chosen: list[_Held], takes: list[int]) -> pa.RecordBatch:
    """Gather the chosen rows (in pool order) into one contiguous batch, cutting the straddler's tail."""
    rows = pa.Table.from_batches([h.batch.slice(h.row, 1) for h in chosen]).select(list(_CARRIED_COLUMNS))
    columns = {name: rows.column(name).combine_chunks() for name in _CARRIED_COLUMNS}
    full = np.fromiter((h.tokens for h in chosen), dtype=np.int32, count=len(chosen))
    tail = int(full[-1]) - takes[-1]
    if tail:
        # Only the last row can be cut: its list ends where the values end, so shorten the final offset.
        for name in ("response_token_ids", "behaviour_logprobs"):
            lists = columns[name]
            offsets = lists.offsets.to_numpy().copy()
            offsets[-1] -= tail
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), lists.values.slice(0, int(offsets[-1])))
    columns["advantage"] = pa.array([h.advantage for h in chosen], type=pa.float32())
    columns["full_response_tokens"] = pa.array(full, type=pa.int32())
    arrays = [columns[f.name] for f in TRAIN_BATCH.arrow]
    return pa.RecordBatch.from_arrays(arrays, schema=TRAIN_BATCH.with_metadata())

