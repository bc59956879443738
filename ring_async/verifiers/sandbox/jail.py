"""One jail: a bubblewrap process tree running the harness, serving exactly one program, then destroyed.

Host side of the harness protocol (see ``harness.py``): start, wait for the ready byte, put the tree in its own
cgroup, send the job and (separately) the completion token, read frames under a deadline, and finally kill the whole
tree: the bubblewrap monitor, which takes the jail's pid namespace down with it (``--die-with-parent``), and then
whatever is still in the jail's cgroup.
"""

from __future__ import annotations

import itertools
import json
import marshal
import os
import select
import signal
import subprocess
import time
from typing import Any, Iterator

from ring_async.verifiers.sandbox import seccomp
from ring_async.verifiers.sandbox.cgroups import CgroupPool, JailCgroup
from ring_async.verifiers.sandbox.policy import (
    HostSandbox, SandboxPolicy, bwrap_argv, harness_command, harness_payload, launch_prefix, popen_identity,
)

READY = b"R"
MARSHAL_VERSION = 4
STDERR_CAP = 16 * 1024
_ids = itertools.count()


class JailStartError(Exception):
    """The jail did not come up (bubblewrap failed, the harness died): a sandbox problem, not the program's."""


class JailDeadline(Exception):
    """The job ran past its overall deadline."""


class JailClosed(Exception):
    """The harness closed its channel before the end of the protocol."""


class Jail:
    def __init__(self, host: HostSandbox, policy: SandboxPolicy, filter_program: bytes | None) -> None:
        self.host = host
        self.policy = policy
        self.name = f"jail-{os.getpid()}-{next(_ids)}"
        self.cgroup: JailCgroup | None = None
        self._cgroup_pool: CgroupPool | None = None
        self._init_pidfd: int | None = None  # the jail's pid 1 (the harness), once attached
        self._buffer = bytearray()
        self._received = 0
        seccomp_r = None
        if filter_program is not None:
            seccomp_r, seccomp_w = os.pipe()
            os.write(seccomp_w, filter_program)  # a few hundred bytes: fits the pipe buffer
            os.close(seccomp_w)
        try:
            argv = launch_prefix(host) + bwrap_argv(host, policy, seccomp_r, harness_command(host))
            # env={}: the host's secrets do not even reach bubblewrap's own environment.
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env={},
                cwd="/", pass_fds=(seccomp_r,) if seccomp_r is not None else (), start_new_session=True,
                **popen_identity(host),  # type: ignore[arg-type]
            )
        finally:
            if seccomp_r is not None:
                os.close(seccomp_r)
        assert self.proc.stdin is not None
        try:
            # The harness itself (~36 KB: fits the pipe's buffer, so this does not wait for the jail to start).
            self.proc.stdin.write(harness_payload(host))
        except (BrokenPipeError, ConnectionResetError):
            pass  # bubblewrap failed already: poll_ready reports it
        self.started_at = time.monotonic()
        self.ready = False

    # -- start-up ---------------------------------------------------------------------------------------------

    def poll_ready(self) -> bool:
        """Non-blocking: True once the harness has said it is ready. Raises JailStartError if it died."""
        if self.ready:
            return True
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], 0)
        if not readable:
            if self.proc.poll() is not None:
                raise JailStartError(self._failure(f"bubblewrap exited with {self.proc.returncode}"))
            return False
        first = os.read(self.proc.stdout.fileno(), 1)
        if first != READY:
            raise JailStartError(self._failure(f"harness sent {first!r} instead of ready"))
        self.ready = True
        return True

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if time.monotonic() > deadline:
                raise JailStartError(self._failure(f"not ready after {timeout:.1f}s"))
            select.select([self.proc.stdout], [], [], max(0.0, min(0.05, deadline - time.monotonic())))

    def attach_cgroup(self, pool: CgroupPool | None = None) -> None:
        """Put the whole (idle) jail tree in a cgroup of its own: a new one, or an emptied one from ``pool``. Called
        once the harness is ready, so the tree is just bubblewrap and the harness; everything the program starts
        later inherits the cgroup."""
        if not self.host.cgroups.bases:
            return
        self.cgroup = pool.acquire() if pool is not None else JailCgroup(self.host.cgroups, self.name)
        self._cgroup_pool = pool
        tree = _tree(self.proc.pid)
        if len(tree) >= 2:
            try:
                self._init_pidfd = os.pidfd_open(tree[1])
            except OSError:
                pass
        try:
            self.cgroup.attach(tree)
        except OSError:
            self._cgroup_pool = None  # destroy() empties and removes it: a half-attached cgroup is not reused
            raise

    # -- the job ----------------------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """One host-to-harness frame: marshal (format 4, readable by every Python 3 the jail may run) of plain data
        we built ourselves; the harness needs no import to read it."""
        assert self.proc.stdin is not None
        data = marshal.dumps(message, MARSHAL_VERSION)
        try:
            self.proc.stdin.write(len(data).to_bytes(4, "big") + data)
        except (BrokenPipeError, ConnectionResetError) as err:
            raise JailClosed(f"harness closed its input: {err}") from None

    def frames(self, deadline: float, max_bytes: int) -> Iterator[dict[str, Any]]:
        """Frames from the harness until it closes the channel. Raises JailDeadline past ``deadline``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            while len(self._buffer) >= 4:
                size = int.from_bytes(self._buffer[:4], "big")
                if size > max_bytes:
                    raise JailClosed(f"harness frame of {size} bytes is over the cap")
                if len(self._buffer) < 4 + size:
                    break
                frame = json.loads(bytes(self._buffer[4 : 4 + size]))
                del self._buffer[: 4 + size]
                yield frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JailDeadline()
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            self._received += len(chunk)
            if self._received > max_bytes:
                raise JailClosed("harness sent more than the output cap allows")
            self._buffer += chunk

    # -- teardown ---------------------------------------------------------------------------------------------

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup else 0

    def kill(self) -> None:
        """SIGKILL the whole tree now: the bubblewrap monitor (the jail's pid 1 gets PDEATHSIG, and the kernel
        kills everything in a pid namespace whose init dies) and every process in the jail's cgroup."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup is not None:
            for pid in self.cgroup.members(everywhere=False):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def destroy(self) -> dict[str, Any]:
        """Kill the whole tree, wait until it is gone and remove the cgroup; returns what teardown found."""
        facts: dict[str, Any] = {}
        self.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            facts["bwrap_survived_kill"] = True
        if self._init_pidfd is not None:
            # The jail's pid 1 is reported gone only once every other process of its pid namespace is (the kernel
            # kills and reaps them first): one wait instead of polling the cgroups while the tree exits.
            try:
                select.select([self._init_pidfd], [], [], 5)
            finally:
                os.close(self._init_pidfd)
                self._init_pidfd = None
        if self.cgroup is not None:
            emptied = facts["cgroup_emptied"] = self.cgroup.kill_all()
            if self._cgroup_pool is not None:
                self._cgroup_pool.release(self.cgroup, emptied)  # reused if empty and fit, else removed
            else:
                self.cgroup.remove()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return facts

    def _failure(self, what: str) -> str:
        stderr = b""
        if self.proc.poll() is not None and self.proc.stderr is not None:
            try:
                stderr = self.proc.stderr.read(STDERR_CAP)
            except OSError:
                pass
        text = stderr.decode("utf-8", "replace").strip().splitlines()
        return f"{what}: {text[-1]}" if text else what


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (through /proc/<pid>/task/<tid>/children), parents before children."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children", "rb") as f:
                    children = f.read().split()
            except OSError:
                continue
            found.extend(map(int, children))
    return found


def filter_program(host: HostSandbox) -> bytes | None:
    return seccomp.build_filter() if host.seccomp else None
