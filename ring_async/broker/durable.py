"""The broker with a write-ahead journal and a delivery outbox: a restart loses no rollout and trains none twice.

The broker core is deterministic for a configuration, a sequence of calls and the clock values it reads. So this
wrapper journals every state-changing call with the time it ran at, before the caller is answered, and recovers by
replaying the journal into a fresh core. Rollout batches are journaled as the Arrow IPC bytes they arrived as.

Train batches are delivered by step id and kept in an outbox until the learner acknowledges them (after its
checkpoint holds them): a learner that restarts from an older checkpoint asks again for the steps after it and gets
the very same batches; a step it already acknowledged is never handed out again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pyarrow as pa

from ring_async.broker.core import Broker, LeaseResult, SubmitResult
from ring_async.broker.journal import Entry, Journal, JournalError
from ring_async.broker.prompts import Prompt
from ring_async.config import RingConfig
from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT
from ring_async.data.train_batch import TrainBatch
from ring_async.errors import BrokerError, RingAsyncError

JOURNAL_DIR = "broker-journal"


class DurableBroker:
    def __init__(
        self,
        config: RingConfig,
        dataset: Sequence[Prompt] | None = None,
        run_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        fsync: bool = False,
    ):
        self._wall = clock
        self._now = clock()
        # The core reads time only through this fixed per-call value, so a replay sees exactly what the run saw.
        self.core = Broker(config, dataset, clock=lambda: self._now)
        self._outbox: dict[int, TrainBatch] = {}
        self.acknowledged = -1
        self._journal: Journal | None = None
        # What the journal's history depends on: a replay over other prompts or settings would diverge silently.
        self._identity = {"config": _broker_config_digest(config), "dataset": _dataset_digest(dataset or ())}
        if run_dir is not None:
            self._journal = Journal(Path(run_dir) / JOURNAL_DIR, fsync=fsync)
            if self._journal.next_seq == 0:
                self._log("open", self._identity)
            self._replay(self._journal.replay())
            self._journal.release_replayed()

    # ----------------------------------------------------------------- calls (journaled)

    def inject(self, prompts: Iterable[Prompt]) -> list[str]:
        self._tick()
        prompts = list(prompts)
        ids = self.core.inject(prompts)
        # Journal the prompts with the ids the core gave them, so a replay cannot assign different ones.
        named = [dataclasses.replace(p, prompt_id=i) for p, i in zip(prompts, ids)]
        self._log("inject", {"prompts": [_prompt_to_dict(p) for p in named]})
        return ids

    def lease(self, generator_id: str, max_groups: int, release_held: bool = False) -> LeaseResult:
        self._tick()
        if self.core.expire_leases():
            self._log("expire")
        exhausted = self.core.prompts_exhausted
        result = self.core.lease(generator_id, max_groups, release_held)
        # A lease that changed nothing (no group out, none released, the dataset's end not newly found) is not
        # journaled: idle generators ask several times a second, and a replay without it is the same broker.
        if result.groups.num_rows or result.released or self.core.prompts_exhausted != exhausted:
            args = {"generator_id": generator_id, "max_groups": max_groups}
            self._log("lease", {**args, "release_held": True} if release_held else args)
        return result

    def submit(self, rollouts: pa.RecordBatch, wire: bytes | None = None) -> SubmitResult:
        """Accept a rollout batch; ``wire`` is its IPC encoding when the caller already has it (no re-encode)."""
        self._tick()
        result = self.core.submit(rollouts)
        if result.accepted or result.duplicates or result.late:
            self._log("submit", payload=wire if wire is not None else codec.encode(rollouts, ROLLOUT))
        return result

    def set_policy_version(self, version: int) -> int:
        self._tick()
        dropped = self.core.set_policy_version(version)
        self._log("version", {"version": version})
        return dropped

    def train_batch(self, step_id: int) -> TrainBatch | None:
        """The train batch of ``step_id``: re-delivered if already emitted, assembled if it is the next one."""
        if step_id <= self.acknowledged:
            raise BrokerError(f"step {step_id} was already acknowledged as trained (through step {self.acknowledged})")
        if step_id in self._outbox:
            return self._outbox[step_id]
        if step_id != self.core.steps_emitted:
            raise BrokerError(f"step {step_id} requested, but the next step to assemble is {self.core.steps_emitted}")
        self._tick()
        if self.core.expire_leases():
            self._log("expire")
        batch = self.core.next_batch()
        if batch is not None:
            self._log("emit")
            self._outbox[batch.step_id] = batch
        return batch

    def acknowledge(self, step_id: int) -> None:
        """The learner's checkpoint holds every step through ``step_id``: their batches may be forgotten."""
        if step_id >= self.core.steps_emitted:
            raise BrokerError(f"cannot acknowledge step {step_id}: only {self.core.steps_emitted} steps were emitted")
        if step_id <= self.acknowledged:
            return
        self._tick()
        self._acknowledge(step_id)
        self._log("ack", {"step_id": step_id})

    def expire_leases(self) -> int:
        self._tick()
        expired = self.core.expire_leases()
        if expired:
            self._log("expire")
        return expired

    # ----------------------------------------------------------------- state

    @property
    def outbox_steps(self) -> list[int]:
        return sorted(self._outbox)

    def status(self) -> dict:
        return {
            **self.core.status(),
            "acknowledged_step": self.acknowledged,
            "outbox_steps": len(self._outbox),
            "journal_seq": self._journal.next_seq if self._journal else None,
        }

    def closure(self) -> dict[str, int]:
        return self.core.closure()

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()

    # ----------------------------------------------------------------- internals

    def _tick(self) -> None:
        self._now = self._wall()

    def _acknowledge(self, step_id: int) -> None:
        for step in [s for s in self._outbox if s <= step_id]:
            del self._outbox[step]
        self.acknowledged = step_id

    def _log(self, kind: str, args: dict | None = None, payload: bytes = b"") -> None:
        if self._journal is not None:
            self._journal.append(kind, self._now, args, payload)

    def _replay(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self._now = entry.now
            try:
                self._apply(entry)
            except RingAsyncError as err:
                raise JournalError(f"journal entry {entry.seq} ({entry.kind}) does not replay: {err}") from None
        self._now = self._wall()

    def _apply(self, entry: Entry) -> None:
        args = entry.args
        if entry.kind == "open":
            if args != self._identity:
                raise JournalError(
                    f"the journal was written with config {args['config']} and dataset {args['dataset']}, but this "
                    f"broker has config {self._identity['config']} and dataset {self._identity['dataset']}; "
                    "resume with the same configuration and data, or start a new run directory"
                )
        elif entry.kind == "inject":
            self.core.inject(_prompt_from_dict(p) for p in args["prompts"])
        elif entry.kind == "lease":
            self.core.lease(args["generator_id"], args["max_groups"], args.get("release_held", False))
        elif entry.kind == "submit":
            self.core.submit(codec.decode(entry.payload, ROLLOUT))
        elif entry.kind == "version":
            self.core.set_policy_version(args["version"])
        elif entry.kind == "expire":
            self.core.expire_leases()
        elif entry.kind == "emit":
            batch = self.core.next_batch()
            if batch is None:
                raise JournalError(f"journal entry {entry.seq}: an emitted step does not re-assemble")
            self._outbox[batch.step_id] = batch
        elif entry.kind == "ack":
            self._acknowledge(args["step_id"])
        else:
            raise JournalError(f"journal entry {entry.seq}: unknown kind {entry.kind!r}")


def _broker_config_digest(config: RingConfig) -> str:
    """The settings the broker's decisions depend on (other sections may change across a restart)."""
    relevant = {"seed": config.run.seed, "algorithm": config.algorithm.model_dump(), "broker": config.broker.model_dump()}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _dataset_digest(prompts: Sequence[Prompt]) -> str:
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(f"{p.prompt_id}\x00{p.prompt}\x00{p.reward_type}\x00{p.answer}\x00{p.tests}\x01".encode())
    return digest.hexdigest()[:16]


def _prompt_to_dict(prompt: Prompt) -> dict:
    record = dataclasses.asdict(prompt)
    record["prompt_token_ids"] = list(prompt.prompt_token_ids)
    return record


def _prompt_from_dict(record: dict) -> Prompt:
    return Prompt(**{**record, "prompt_token_ids": tuple(record["prompt_token_ids"])})
