"""Keeping a run's role actors serving through process deaths.

Ray restarts an actor whose process died (``run.max_restarts`` times): it runs the actor's constructor again, so the
host inside is new and not started. The supervisor notices (``started()`` is False), starts the host again on the
ports it had, and when it came back at another address (another node, or its old port was taken) tells the peers
that call it. What a restart of each role costs, and what makes it good:

- broker: nothing it accepted (its journal replays); the groups out on lease come back when their lease expires.
  Control, served beside it, comes back on its old port.
- verifier: the rollouts it was scoring or holding for an external reward; their leases expire and the prompts are
  generated again.
- generator: its groups in flight, likewise; the learner pushes the current policy to it as soon as it is back.
- learner: the step in progress; it resumes from its latest checkpoint and the broker re-delivers the steps after.

A broker that comes back at a different address ends the run with a clear error (every role holds its address);
on a cluster, pin the broker to one node (docs/operations.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ring_async.errors import RingAsyncError
from ring_async.system.hosts import Endpoint

log = logging.getLogger(__name__)

# A role whose actor keeps failing calls for this long is taken as lost (restarts exhausted or never coming back).
LOST_AFTER_S = 300.0
_CALL_TIMEOUT_S = 30.0


class RoleLost(RingAsyncError):
    """A role's actor died and did not come back."""


@dataclass
class Role:
    actor: Any
    endpoint: Endpoint
    restarts: int = 0
    failing_since: float | None = None
    any_ports: bool = False  # its old ports could not be bound again: the next start takes free ones


class Supervisor:
    def __init__(self, ray: Any, control_token: str, lost_after_s: float = LOST_AFTER_S):
        self._ray = ray
        self.roles: dict[str, Role] = {}
        self.control_token = control_token
        self.control_port = 0
        self.lost_after_s = lost_after_s

    def add(self, actor: Any, endpoint: Endpoint) -> None:
        self.roles[endpoint.instance] = Role(actor, endpoint)

    def _of(self, role: str) -> list[Role]:
        return [r for r in self.roles.values() if r.endpoint.role == role]

    @property
    def restarts(self) -> dict[str, int]:
        return {name: r.restarts for name, r in self.roles.items() if r.restarts}

    def check(self) -> None:
        """Start every restarted role again and re-wire its peers."""
        from ray.exceptions import GetTimeoutError, RayActorError

        refs = {name: r.actor.started.remote() for name, r in self.roles.items()}
        for name, ref in refs.items():
            role = self.roles[name]
            try:
                started = self._ray.get(ref, timeout=_CALL_TIMEOUT_S)
            except (RayActorError, GetTimeoutError) as err:  # dead, or Ray is bringing it back
                now = time.monotonic()
                role.failing_since = role.failing_since or now
                if now - role.failing_since > self.lost_after_s:
                    raise RoleLost(f"{role.endpoint.role} {name} has not answered for {now - role.failing_since:.0f} s "
                                   f"(restarts used: {role.restarts}): {err}") from None
                continue
            role.failing_since = None
            if not started:
                self._restart(role)

    def _restart(self, role: Role) -> None:
        old = role.endpoint
        log.warning("%s %s was restarted by Ray: starting it again on %s", old.role, old.instance, old.address)
        new = self._start(role)
        if new is None:
            return
        role.endpoint, role.restarts, role.any_ports = new, role.restarts + 1, False
        if old.role == "broker":
            if new.address != old.address:
                raise RoleLost(f"the broker came back at {new.address}, not {old.address}; every role holds its "
                               "address: rerun the run in the same run directory (it resumes from the journal and "
                               "the latest checkpoint)")
            peers = [r.endpoint for r in self.roles.values()]
            self._ray.get(role.actor.start_control.remote(peers, self.control_token, self.control_port),
                          timeout=_CALL_TIMEOUT_S)
            return
        moved = new.address != old.address
        calls = []
        if moved:
            calls += [b.actor.set_peer.remote(new) for b in self._of("broker")]
            if old.role == "verifier":
                calls += [g.actor.set_verifier.remote(new.address) for g in self._of("generator")]
        if old.role == "generator":  # moved or not, it starts from the initial policy: push the current one
            calls += [lr.actor.set_generator.remote(new) for lr in self._of("learner")]
        self._ray.get(calls, timeout=120)

    def _start(self, role: Role) -> Endpoint | None:
        """The restarted host started on its old ports; None when that failed and the actor is being restarted
        once more (a half-started host is not started twice), to come back on free ports."""
        from ray.exceptions import RayTaskError

        old = role.endpoint
        ports = (0, 0) if role.any_ports else (old.port, old.metrics_port)
        try:
            return self._ray.get(role.actor.start.remote(*ports), timeout=600)
        except RayTaskError as err:
            if role.any_ports:
                raise RoleLost(f"{old.role} {old.instance} cannot start again: {err}") from None
            log.warning("%s %s cannot start on its old ports, restarting it for free ones: %s", old.role,
                        old.instance, err)
            role.any_ports = True
            self._ray.kill(role.actor, no_restart=False)
            return None
