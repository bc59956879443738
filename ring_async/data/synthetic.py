"""Synthetic rollouts for leased prompt groups: the workload of the broker benchmark, tests and dry runs.

Lengths, rewards and versions are drawn from a seeded generator so a workload is reproducible. Token ids and
logprobs are random but well-formed, exactly as a generator would send them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ring_async.data import codec
from ring_async.data.schemas import ROLLOUT, rollout_id


@dataclass(frozen=True)
class LengthSpread:
    """Lognormal response lengths clipped to [low, high]; ``median`` is the lognormal's median."""

    low: int = 1024
    high: int = 32768
    median: float = 4096.0
    sigma: float = 0.9

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raw = rng.lognormal(np.log(self.median), self.sigma, size=n)
        return np.clip(raw, self.low, self.high).astype(np.int64)


def synthetic_rollouts(
    groups: pa.RecordBatch,
    rng: np.random.Generator,
    lengths: LengthSpread,
    policy_version: int = 0,
    prompt_tokens: int = 128,
    vocab_size: int = 32000,
    solve_rate: float | None = None,
    masked_rate: float = 0.0,
) -> pa.RecordBatch:
    """One scored rollout per sample of every leased group (schema ``rollout``), groups in lease order.

    Each group gets its own solve rate (uniform, or ``solve_rate``) so that some groups are all-correct or
    all-wrong, as on real tasks; ``masked_rate`` of the rollouts come back ``unverifiable`` with no reward.
    """
    cols: dict[str, list] = {k: [] for k in ("rollout_id", "group_id", "prompt_id", "sample_index", "reward", "verdict")}
    response_lengths: list[int] = []
    for gid, pid, size in zip(
        groups.column("group_id").to_pylist(), groups.column("prompt_id").to_pylist(), groups.column("group_size").to_pylist()
    ):
        rate = rng.uniform() if solve_rate is None else solve_rate
        for index in range(size):
            cols["rollout_id"].append(rollout_id(gid, index))
            cols["group_id"].append(gid)
            cols["prompt_id"].append(pid)
            cols["sample_index"].append(index)
            if rng.uniform() < masked_rate:
                cols["reward"].append(None)
                cols["verdict"].append("unverifiable")
            else:
                correct = bool(rng.uniform() < rate)
                cols["reward"].append(1.0 if correct else 0.0)
                cols["verdict"].append("correct" if correct else "incorrect")
        response_lengths.extend(lengths.sample(rng, size).tolist())
    n = len(cols["rollout_id"])
    total = int(sum(response_lengths))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(response_lengths, out=offsets[1:])
    prompt_offsets = np.arange(n + 1, dtype=np.int32) * prompt_tokens
    response = pa.ListArray.from_arrays(offsets, rng.integers(0, vocab_size, total, dtype=np.int32))
    logprobs = pa.ListArray.from_arrays(offsets, -rng.exponential(1.0, total).astype(np.float32))
    prompt = pa.ListArray.from_arrays(prompt_offsets, rng.integers(0, vocab_size, n * prompt_tokens, dtype=np.int32))
    return codec.build_batch(
        ROLLOUT,
        {
            **cols,
            "prompt_token_ids": prompt,
            "response_token_ids": response,
            "behaviour_logprobs": logprobs,
            "policy_version_first": [policy_version] * n,
            "policy_version_last": [policy_version] * n,
            "finish_reason": ["stop"] * n,
            "reward_type": ["math"] * n,
            "generation_s": [0.0] * n,
            "verification_s": [0.0] * n,
            "completed_at": [0.0] * n,
        },
    )
