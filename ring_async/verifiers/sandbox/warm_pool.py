"""A pool of pre-started jails: a program takes a jail whose harness is already up, instead of paying bubblewrap
and an interpreter start (~15 ms) on its own latency. Each jail still serves exactly one program and is destroyed
after it; the pool only moves the start-up off the critical path.

One background thread keeps ``size`` jails ready or starting. It starts jails in parallel (Popen returns at once)
and waits for their ready bytes together, so refilling is not limited by one start-up at a time.
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time

from ring_async.verifiers.sandbox.cgroups import CgroupPool
from ring_async.verifiers.sandbox.jail import Jail, JailStartError, filter_program
from ring_async.verifiers.sandbox.policy import HostSandbox, SandboxPolicy

START_FAILURE_BACKOFF_S = 0.5


class JailPool:
    def __init__(self, host: HostSandbox, policy: SandboxPolicy, size: int) -> None:
        self.host = host
        self.policy = policy
        self.size = max(1, size)
        self._filter = filter_program(host)
        # The jails' cgroups are reused from jail to jail (emptied and checked first) rather than created and
        # removed for each: that was ~8 ms of CPU per jail on cgroup v1 (three hierarchies).
        self.cgroups = CgroupPool(host.cgroups, f"jail-{os.getpid()}-{id(self):x}") if host.cgroups.bases else None
        self._idle: collections.deque[Jail] = collections.deque()
        self._starting: list[Jail] = []
        self._cond = threading.Condition()
        self._closed = False
        self._last_error = ""
        self._failures_in_a_row = 0
        self.started = 0
        self.start_failures = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._refill, name="jail-pool", daemon=True)
        self._thread.start()

    def acquire(self, timeout: float) -> Jail:
        """A ready jail, attached to its cgroup. Raises JailStartError when none comes up within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise JailStartError("the jail pool is closed")
                while self._idle:
                    jail = self._idle.popleft()
                    if jail.proc.poll() is None:
                        self._wake()
                        return jail
                    jail.destroy()  # died while idle
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JailStartError(f"no jail ready after {timeout:.1f}s: {self._last_error or 'starting'}")
                self._wake()
                self._cond.wait(min(remaining, 0.1))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._wake()
        self._thread.join(timeout=10)
        with self._cond:
            jails = list(self._idle) + self._starting
            self._idle.clear()
            self._starting = []
        for jail in jails:
            jail.destroy()
        if self.cgroups is not None:
            self.cgroups.close()  # the idle ones; those of jails still being torn down are removed on release
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def stats(self) -> dict[str, object]:
        with self._cond:
            return {"size": self.size, "idle": len(self._idle), "starting": len(self._starting),
                    "started": self.started, "start_failures": self.start_failures, "last_error": self._last_error,
                    "cgroups": self.cgroups.stats() if self.cgroups is not None else None}

    # -- the refill thread ------------------------------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or closing

    def _refill(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                missing = self.size - len(self._idle) - len(self._starting)
            if self._failures_in_a_row:
                time.sleep(min(5.0, START_FAILURE_BACKOFF_S * self._failures_in_a_row))
            for _ in range(max(0, missing)):
                try:
                    jail = Jail(self.host, self.policy, self._filter)
                except OSError as err:
                    self._record_failure(f"cannot start bubblewrap: {err}")
                    break
                with self._cond:
                    self._starting.append(jail)
                    self.started += 1
            with self._cond:
                starting = list(self._starting)
            fds = [self._wake_r] + [j.proc.stdout.fileno() for j in starting if j.proc.stdout is not None]
            try:
                select.select(fds, [], [], 0.5)
            except (OSError, ValueError):
                pass
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            self._collect(starting)

    def _collect(self, starting: list[Jail]) -> None:
        now = time.monotonic()
        for jail in starting:
            try:
                if not jail.poll_ready():
                    if now - jail.started_at > self.policy.jail_start_timeout_s:
                        raise JailStartError(f"not ready after {self.policy.jail_start_timeout_s:.0f}s")
                    continue
                jail.attach_cgroup(self.cgroups)
            except (JailStartError, OSError) as err:
                with self._cond:
                    self._starting.remove(jail)
                jail.destroy()
                self._record_failure(str(err))
                continue
            with self._cond:
                self._starting.remove(jail)
                if self._closed:
                    jail.destroy()
                    continue
                self._idle.append(jail)
                self._failures_in_a_row = 0
                self._cond.notify()

    def _record_failure(self, message: str) -> None:
        with self._cond:
            self._last_error = message
            self.start_failures += 1
            self._failures_in_a_row += 1
            self._cond.notify_all()
