"""Per-jail control groups (pids, memory, cpu) where the machine lets us create them.

rlimits bound one process; a cgroup bounds the whole jail (every process the program forks, the tmpfs pages it
writes) and lets us kill and count everything in it. Both cgroup v2 (unified) and v1 (one hierarchy per controller,
still common in containers) are handled. Creating cgroups needs write access to our own cgroup directory (root, or a
delegated subtree); when that is missing the sandbox falls back to rlimits alone and says so in every verdict.

Layout: ``<our cgroup>/ring-async-sandbox-<pid>/<jail id>`` in each usable hierarchy.

A jail pool reuses these directories (``CgroupPool``) instead of creating and removing three cgroups per jail: a
cgroup goes back to the pool only once it holds no task and (nearly) no memory charge, and it starts every jail with
its OOM count read afresh and its limits written per job. A jail started on its own creates and removes its cgroup.
"""

from __future__ import annotations

import collections
import errno
import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("pids", "memory", "cpu")
CPU_PERIOD_US = 100_000
# A released cgroup is reused only when the memory still charged to it (page cache its programs read, kernel
# objects) is at most this much, after asking the kernel to reclaim it; otherwise it is removed (the kernel then
# moves the charges to the parent). A few MiB against a limit of hundreds (limit + 2 x tmpfs + the harness's 96 MiB),
# and what is left is reclaimable cache, which the kernel reclaims before it would OOM-kill anything.
REUSE_MAX_CHARGE_BYTES = 8 << 20


@dataclass(frozen=True)
class CgroupSupport:
    """Which controllers can be used, and where the jails' parent directory is for each."""

    version: str | None  # "v2", "v1" or None
    bases: dict[str, Path] = field(default_factory=dict)  # controller -> parent dir of the jail cgroups
    reason: str = ""  # why some or all controllers are unavailable

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(c for c in CONTROLLERS if c in self.bases)

    def describe(self) -> dict[str, object]:
        return {"version": self.version, "controllers": list(self.controllers), "reason": self.reason}


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of the cgroup mounts, from /proc/self/mountinfo."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        fields = right.split()
        if len(parts) < 5 or len(fields) < 3 or fields[0] not in ("cgroup", "cgroup2"):
            continue
        found.append((parts[4], fields[0], set(fields[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Our cgroup path per v1 controller, and under key "" the v2 path (from /proc/self/cgroup)."""
    paths: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _hid, controllers, path = line.split(":", 2)
        if not controllers:
            paths[""] = path
        for name in controllers.split(","):
            paths[name] = path
    return paths


def _sweep_stale(parent: Path) -> None:
    """Remove the (empty) jail cgroups of ring-async processes that died without cleaning up (SIGKILL, OOM)."""
    try:
        entries = list(parent.glob("ring-async-sandbox-*"))
    except OSError:
        return
    for base in entries:
        pid = base.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for jail in base.glob("jail-*"):
            _remove_dir(jail)
        _remove_dir(base)


def _try_create(base: Path) -> str:
    """Create (or reuse) the jails' parent directory; '' when usable, else the reason."""
    _sweep_stale(base.parent)
    try:
        base.mkdir(exist_ok=True)
        probe = base / f"probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
        return ""
    except OSError as err:
        return f"{base}: {err.strerror or err}"


def detect() -> CgroupSupport:
    """Find writable pids/memory/cpu controllers, v2 first, then v1."""
    mounts = _mounts()
    own = _own_paths()
    leaf = f"ring-async-sandbox-{os.getpid()}"
    reasons: list[str] = []
    unified = [m for m in mounts if m[1] == "cgroup2"]
    for mount_point, _fs, _opts in unified:
        root = Path(mount_point)
        available = set((root / "cgroup.controllers").read_text().split()) if (root / "cgroup.controllers").exists() \
            else set()
        wanted = [c for c in CONTROLLERS if c in available]
        if not wanted:
            continue  # a hybrid machine's unified mount without our controllers: v1 below
        own_dir = root / own.get("", "/").lstrip("/")
        base = own_dir / leaf
        reason = _try_create(base)
        if reason:
            reasons.append(reason)
            break
        try:
            # The jail cgroups are children of base: base must enable the controllers for its subtree. (A v2
            # cgroup with processes cannot do that for its own children, which is why the jails live one level
            # down, in a directory with no processes of its own.)
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        except OSError as err:
            reasons.append(f"{base}/cgroup.subtree_control: {err.strerror or err} (controllers not delegated)")
            _remove_dir(base)
            break
        if "cpu" in wanted:
            _weigh_as_processes(base / "cpu.weight", 100)
        return CgroupSupport("v2", {c: base for c in wanted}, "; ".join(reasons))
    bases: dict[str, Path] = {}
    for controller in CONTROLLERS:
        mount = next((m for m in mounts if m[1] == "cgroup" and controller in m[2]), None)
        if mount is None:
            reasons.append(f"{controller}: no cgroup v1 hierarchy mounted")
            continue
        base = Path(mount[0]) / own.get(controller, "/").lstrip("/") / leaf
        reason = _try_create(base)
        if reason:
            reasons.append(f"{controller}: {reason}")
            continue
        bases[controller] = base
        if controller == "cpu":
            _weigh_as_processes(base / "cpu.shares", 1024)
    if bases:
        return CgroupSupport("v1", bases, "; ".join(reasons))
    return CgroupSupport(None, {}, "; ".join(reasons) or "no cgroup filesystem")


def _weigh_as_processes(path: Path, default_weight: int) -> None:
    """Give the jails' parent cgroup the CPU weight of one ordinary process per core. By default the whole group,
    every jail in it, weighs what one process does against the machine's other processes, so under contention the
    sandbox got a fraction of the CPU it had without a cpu cgroup (measured: ~25% fewer programs/s on a shared
    2-core machine, at the same CPU cost per program). Best effort: the default weight stays where it cannot be set."""
    try:
        path.write_text(str(default_weight * (os.cpu_count() or 1)))
    except OSError:
        pass


def _remove_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _write_file(path: str, value: str) -> None:
    # os.open/os.write rather than pathlib: a jail's cgroup files are written and read a dozen times per program.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_file(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    finally:
        os.close(fd)


class JailCgroup:
    """The cgroup(s) of one jail: limits, membership, OOM count, kill, removal."""

    def __init__(self, support: CgroupSupport, name: str) -> None:
        self.support = support
        self.name = name
        self.dirs: dict[str, Path] = {}
        for controller, base in support.bases.items():
            path = base / name
            if path not in self.dirs.values():
                path.mkdir(exist_ok=True)
            self.dirs[controller] = path
        self._paths = {controller: str(path) for controller, path in self.dirs.items()}
        self._unique = sorted(set(self._paths.values()))  # one directory per hierarchy (v2: just one)
        # Every process of the jail is in the same cgroup of each hierarchy (the tree is attached to all of them and
        # children inherit them all), so polling one hierarchy tells when the tree is gone; the final check that the
        # jail's cgroups are empty reads all of them.
        self._primary = self._paths.get("pids", self._unique[0] if self._unique else "")
        self._oom_baseline = 0  # the OOM count when this jail got the cgroup (a reused one keeps its total)

    def _write(self, controller: str, filename: str, value: str) -> None:
        if controller in self._paths:
            _write_file(f"{self._paths[controller]}/{filename}", value)

    def set_limits(self, max_pids: int, memory_bytes: int, cpus: float) -> None:
        v2 = self.support.version == "v2"
        self._write("pids", "pids.max", str(max_pids))
        if v2:
            self._write("memory", "memory.max", str(memory_bytes))
            if "memory" in self._paths and os.path.exists(f"{self._paths['memory']}/memory.swap.max"):
                self._write("memory", "memory.swap.max", "0")  # swapping would turn a memory bomb into a hang
            self._write("cpu", "cpu.max", f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        else:
            self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
            self._write("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US))
            self._write("cpu", "cpu.cfs_quota_us", str(int(cpus * CPU_PERIOD_US)))

    def attach(self, pids: list[int]) -> None:
        for path in self._unique:
            for pid in pids:
                try:
                    _write_file(f"{path}/cgroup.procs", str(pid))
                except ProcessLookupError:
                    pass
                except OSError as err:
                    if err.errno != errno.ESRCH:
                        raise

    def oom_kills(self) -> int:
        """How many processes the kernel killed for going over the jail's memory limit (since this jail got the
        cgroup: the kernel's counter cannot be reset, so a reused cgroup counts from its baseline)."""
        return self._oom_total() - self._oom_baseline

    def _oom_total(self) -> int:
        path = self._paths.get("memory")
        if path is None:
            return 0
        name = "memory.events" if self.support.version == "v2" else "memory.oom_control"
        try:
            for line in _read_file(f"{path}/{name}").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def members(self, everywhere: bool = True) -> list[int]:
        """The pids in the jail's cgroups: of every hierarchy, or (``everywhere=False``) of the one that
        ``_primary`` names, which holds the same tree."""
        pids: set[int] = set()
        for path in self._unique if everywhere else [self._primary]:
            try:
                pids.update(int(p) for p in _read_file(f"{path}/cgroup.procs").split())
            except OSError:
                pass
        return sorted(pids)

    def kill_all(self, attempts: int = 200) -> bool:
        """SIGKILL everything in the jail's cgroups until they are empty; True when they are."""
        if self.support.version == "v2":
            for path in self._unique:
                try:
                    _write_file(f"{path}/cgroup.kill", "1")
                except OSError:
                    pass
        for _ in range(attempts):
            members = self.members()
            if not members:
                return True
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)
        return not self.members()

    def memory_charged(self) -> int:
        """Bytes still charged to the memory cgroup (0 without one)."""
        path = self._paths.get("memory")
        if path is None:
            return 0
        name = "memory.current" if self.support.version == "v2" else "memory.usage_in_bytes"
        return int(_read_file(f"{path}/{name}"))

    def prepare_reuse(self) -> bool:
        """Make an emptied cgroup fit for the next jail; False when it cannot be reused (then remove it). Called
        only once ``kill_all`` found it empty: no task left, so nothing of the previous jail can act in it."""
        try:
            path = self._paths.get("memory")
            if path is not None:
                if self.memory_charged() > REUSE_MAX_CHARGE_BYTES:
                    # v1: reclaim what an empty cgroup still holds; v2 has no force_empty (memory.reclaim is
                    # optional), so such a cgroup is simply not reused.
                    if self.support.version == "v2":
                        return False
                    _write_file(f"{path}/memory.force_empty", "0")
                    if self.memory_charged() > REUSE_MAX_CHARGE_BYTES:
                        return False
                if self.support.version == "v1":
                    _write_file(f"{path}/memory.max_usage_in_bytes", "0")  # peak and failure count start afresh
                    _write_file(f"{path}/memory.failcnt", "0")
            self._oom_baseline = self._oom_total()
        except (OSError, ValueError):
            return False
        return True

    def remove(self) -> None:
        for path in set(self.dirs.values()):
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY:
                        break
                    time.sleep(0.002)  # the last killed processes are still exiting


class CgroupPool:
    """Jail cgroups kept for reuse: ``acquire`` hands out an idle one (or creates one), ``release`` takes back the
    cgroup of a destroyed jail once it is empty, and removes it instead when it is not fit for reuse. A cgroup serves
    one jail at a time; at most ``max_idle`` wait for the next (more are removed). Thread-safe."""

    def __init__(self, support: CgroupSupport, prefix: str, max_idle: int = 16) -> None:
        self.support = support
        self.prefix = prefix
        self.max_idle = max_idle
        self._idle: collections.deque[JailCgroup] = collections.deque()  # first released, first reused
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False
        self.created = 0
        self.reused = 0
        self.discarded = 0  # released cgroups removed instead of reused (not empty, memory left, a write failed)

    def acquire(self) -> JailCgroup:
        with self._lock:
            if self._idle:
                self.reused += 1
                return self._idle.popleft()
            self.created += 1
            name = f"{self.prefix}-{next(self._ids)}"
        return JailCgroup(self.support, name)

    def release(self, cgroup: JailCgroup, emptied: bool) -> None:
        """Take back the cgroup of a destroyed jail (``emptied``: ``kill_all`` found no task left)."""
        fit = emptied and cgroup.prepare_reuse()
        with self._lock:
            if fit and not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(cgroup)
                return
            if not fit:
                self.discarded += 1
        cgroup.remove()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"created": self.created, "reused": self.reused, "discarded": self.discarded,
                    "idle": len(self._idle)}

    def close(self) -> None:
        """Remove the idle cgroups; cgroups released later are removed rather than kept."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
        for cgroup in idle:
            cgroup.remove()


def remove_bases(support: CgroupSupport) -> None:
    """Remove the per-process parent directories (at exit; only empty ones can go)."""
    for base in set(support.bases.values()):
        _remove_dir(base)
