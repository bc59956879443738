"""The sandbox policy: limits, the bubblewrap command line of a jail, and what this machine actually provides.

Every protection has a stated fallback and every verdict reports which protections were active (``protections()``),
so a run on a machine without cgroups, or without seccomp support, is visible as such instead of silently weaker.
Untrusted code never runs without bubblewrap's namespaces: when bubblewrap is missing or cannot create a user
namespace, every code verdict is ``sandbox_error`` (masked), never an unjailed run.
"""

from __future__ import annotations

import atexit
import functools
import os
import platform
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ring_async.verifiers.sandbox import cgroups, seccomp

HARNESS_PATH = Path(__file__).with_name("harness.py")
JAIL_UID = 1000  # the uid and gid a program sees inside its user namespace
NAMESPACES = ("user", "pid", "mount", "network", "ipc", "uts", "cgroup")
ROOT_DIRS = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")
MIN_JAIL_PYTHON = (3, 9)  # os.pidfd_open
DEV_NODES = ("null", "zero", "full", "random", "urandom")
# A minimal /dev on the read-only root: the five harmless device nodes, the stdio links, and /dev/shm (a size-capped
# tmpfs, mounted below). Unlike bwrap's --dev, no tmpfs of its own (which was writable and had no size cap), no
# devpts (pseudo-terminals), no /dev/tty; also three mounts fewer per jail.
DEV_ARGS = (
    *(arg for node in DEV_NODES for arg in ("--dev-bind", f"/dev/{node}", f"/dev/{node}")),
    "--symlink", "/proc/self/fd", "/dev/fd",
    *(arg for fd, name in enumerate(("stdin", "stdout", "stderr"))
      for arg in ("--symlink", f"/proc/self/fd/{fd}", f"/dev/{name}")),
)


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits of a jail. ``time_limit_s`` and ``memory_limit_mb`` are defaults a tests file may override (capped)."""

    time_limit_s: float = 2.0  # CPU seconds per test case
    memory_limit_mb: int = 256  # address space per process of a case
    max_time_limit_s: float = 20.0
    max_memory_limit_mb: int = 4096
    wall_factor: float = 2.0  # a case is killed after wall_factor * time_limit_s + wall_extra_s of wall time
    wall_extra_s: float = 0.5
    output_limit_bytes: int = 1 << 20  # stdout (or the function result) per case; stderr likewise
    file_size_bytes: int = 16 << 20  # RLIMIT_FSIZE
    tmpfs_bytes: int = 64 << 20  # the only writable place (/tmp), and /dev/shm
    max_processes: int = 32  # tasks (processes and threads) a case may add (RLIMIT_NPROC, pids cgroup)
    max_open_files: int = 64
    cpus_per_jail: float = 1.0  # cgroup cpu quota
    harness_memory_mb: int = 96  # the harness interpreter itself, on top of the case's limit in the cgroup
    compile_time_limit_s: float = 20.0
    compile_memory_mb: int = 1024
    cxx_flags: tuple[str, ...] = ("-std=c++17", "-O2", "-pipe")
    max_source_bytes: int = 256 * 1024
    host_uid: int = 65534  # when ring-async runs as root, jails run as this host uid (nobody)
    jail_start_timeout_s: float = 10.0


@dataclass(frozen=True)
class HostSandbox:
    """What this machine provides, found once by starting a probe jail (``probe()``)."""

    ok: bool
    reason: str
    bwrap: str | None
    bwrap_version: str
    python: str
    gxx: str | None
    root_layout: tuple[tuple[str, ...], ...]
    run_as_uid: int | None  # host uid the jail processes run as when we drop from root; None: our own uid
    uid_note: str
    seccomp: bool
    seccomp_note: str
    no_new_privs: bool
    disable_userns: bool
    tmpfs_size: bool
    harness_code: bytes = b""  # the harness marshalled by the jail's interpreter (probe time); empty: send the source
    setpriv: str | None = None
    cgroups: cgroups.CgroupSupport = field(default_factory=lambda: cgroups.CgroupSupport(None))

    def protections(self) -> dict[str, object]:
        """The protections active for every jail on this machine, with the fallback taken where one is missing."""
        return {
            "bubblewrap": self.bwrap_version if self.ok else f"unavailable: {self.reason}",
            "namespaces": list(NAMESPACES) if self.ok else [],
            "network": "loopback only (new network namespace)",
            "root": "read-only /usr and loader links; size-capped tmpfs /tmp and /dev/shm; fresh /proc; minimal read-only /dev",
            "environment": "cleared; only PATH, HOME, TMPDIR, LANG (and PWD, set by bwrap)",
            "no_new_privs": self.no_new_privs,
            "seccomp": "deny-list filter" if self.seccomp else f"off: {self.seccomp_note}",
            "rlimits": ["CPU", "AS", "FSIZE", "NOFILE", "NPROC", "CORE=0", "STACK (C++)"],
            "cgroups": self.cgroups.describe() if self.cgroups.version else
            f"off (rlimits only): {self.cgroups.reason}",
            "tmpfs_size_cap": self.tmpfs_size,
            "userns_disabled_inside": self.disable_userns,
            "host_uid": self.run_as_uid if self.run_as_uid is not None else os.geteuid(),
            "host_uid_note": self.uid_note,
            "harness": "pid 1 of the jail, non-dumpable; Python cases in a forked runner, C++ cases in forked "
                       "children; whole jail killed after the job",
        }


def _jail_python() -> str:
    """The interpreter that runs the harness inside the jail: the system one (under /usr, which every jail binds
    read-only) when it is new enough, else the one running ring-async."""
    for candidate in ("/usr/bin/python3",):
        if os.path.exists(candidate):
            return os.path.realpath(candidate)
    return os.path.realpath(sys.executable)


def _root_layout(python: str) -> list[tuple[str, ...]]:
    """Mount operations for a read-only minimal root: /usr, the merged-/usr links (or the real dirs), the loader
    cache, and the interpreter's prefix when it lives outside /usr."""
    layout: list[tuple[str, ...]] = [("--ro-bind", "/usr", "/usr")]
    for name in ROOT_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            layout.append(("--symlink", os.readlink(path), str(path)))
        elif path.is_dir():
            layout.append(("--ro-bind", str(path), str(path)))
    layout.append(("--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"))
    if not python.startswith("/usr/"):
        prefix = str(Path(python).resolve().parent.parent)
        layout.append(("--ro-bind", prefix, prefix))
    return layout


def _world_readable(path: str) -> bool:
    """True when every directory up to ``path`` lets others search it (so a dropped uid can reach it)."""
    current = Path(path).resolve()
    for part in [current, *current.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return bool(Path(path).stat().st_mode & stat.S_IROTH)


def bwrap_argv(host: HostSandbox, policy: SandboxPolicy, seccomp_fd: int | None, command: list[str]) -> list[str]:
    """The bubblewrap command line of one jail. Order matters: bwrap applies mount operations left to right, and
    ``--remount-ro /`` must come after every mount point it creates."""
    assert host.bwrap is not None
    argv = [
        host.bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--uid", str(JAIL_UID), "--gid", str(JAIL_UID), "--hostname", "sandbox",
        "--die-with-parent", "--new-session", "--as-pid-1",
    ]
    if host.disable_userns:
        argv.append("--disable-userns")
    for op in host.root_layout:
        argv.extend(op)
    argv += ["--proc", "/proc", *DEV_ARGS]
    for target in ("/tmp", "/dev/shm"):
        if host.tmpfs_size:
            argv += ["--size", str(policy.tmpfs_bytes)]
        argv += ["--perms", "1777", "--tmpfs", target] if host.tmpfs_size else ["--tmpfs", target]
    argv += ["--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    for key, value in (("PATH", "/usr/bin:/bin"), ("HOME", "/tmp"), ("TMPDIR", "/tmp"), ("LANG", "C.UTF-8")):
        argv += ["--setenv", key, value]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv + ["--", *command]


# The jail's command line is a short boot stub; the harness itself arrives as the first frame on its stdin, written by
# the host as soon as the jail starts. Passing ~70 KB of hex in argv instead cost ~3 ms of CPU per jail: it was copied
# by every exec on the way (setpriv, bwrap, python), widened to wchar_t, and parsed as -c source.
_BOOT = (
    "import marshal,posix\n"
    "def _boot(n):\n"
    " b=b''\n"
    " while len(b)<n:\n"
    "  c=posix.read(0,n-len(b))\n"
    "  if not c:raise SystemExit(0)\n"  # the host dropped the jail before sending the harness
    "  b+=c\n"
    " return b\n"
)
BOOT_MARSHAL = _BOOT + "exec(marshal.loads(_boot(int.from_bytes(_boot(4),'big'))))\n"
BOOT_SOURCE = _BOOT + "exec(compile(_boot(int.from_bytes(_boot(4),'big')),'harness.py','exec'))\n"


def harness_command(host: HostSandbox) -> list[str]:
    # -I: ignore PYTHON* variables and the user site; -S: no site module; -B: never write .pyc into the jail.
    return [host.python, "-I", "-S", "-B", "-c", BOOT_MARSHAL if host.harness_code else BOOT_SOURCE]


def harness_payload(host: HostSandbox) -> bytes:
    """The first host-to-harness frame: the harness pre-compiled by the jail's own interpreter at probe time (saves
    compiling ~600 lines in every jail), or its source where that failed."""
    data = host.harness_code or _harness_source()
    return len(data).to_bytes(4, "big") + data


@functools.lru_cache(maxsize=1)
def _harness_source() -> bytes:
    return HARNESS_PATH.read_bytes()


def _compile_harness(python: str) -> bytes:
    """The harness as a marshalled code object of the jail's interpreter, or b'' when that fails. Runs our own
    source through the system interpreter; nothing untrusted is involved."""
    script = "import marshal,sys;sys.stdout.write(marshal.dumps(compile(sys.stdin.read(),'harness.py','exec')).hex())"
    try:
        done = subprocess.run([python, "-I", "-S", "-B", "-c", script], input=HARNESS_PATH.read_text(),
                              capture_output=True, text=True, timeout=30, env={}, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return b""
    if done.returncode != 0:
        return b""
    try:
        return bytes.fromhex(done.stdout.strip())
    except ValueError:
        return b""


def launch_prefix(host: HostSandbox) -> list[str]:
    """Command prefix that drops from root to the jail's host uid before bubblewrap runs. setpriv (util-linux) is
    preferred over Popen(user=...), which makes CPython fork the whole verifier process instead of vfork-ing it: a
    big page-table copy per jail when the verifier shares a process with a model."""
    if host.run_as_uid is None or not host.setpriv:
        return []
    uid = str(host.run_as_uid)
    return [host.setpriv, "--reuid", uid, "--regid", uid, "--clear-groups", "--"]


def popen_identity(host: HostSandbox) -> dict[str, object]:
    """subprocess.Popen arguments for the uid drop when setpriv is missing (nothing when we are not root)."""
    if host.run_as_uid is None or host.setpriv:
        return {}
    return {"user": host.run_as_uid, "group": host.run_as_uid, "extra_groups": []}


_PROBE_SCRIPT = r"""
import os, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
ok = sys.version_info >= (3, 9)
print(status["NoNewPrivs"].strip(), status["Seccomp"].strip(), int(ok), os.getpid())
"""


def _run_probe(host: HostSandbox, policy: SandboxPolicy, use_seccomp: bool) -> tuple[bool, str, list[str]]:
    fd_r = None
    try:
        if use_seccomp:
            fd_r, fd_w = os.pipe()
            os.write(fd_w, seccomp.build_filter())
            os.close(fd_w)
        argv = launch_prefix(host) + bwrap_argv(host, policy, fd_r, [host.python, "-I", "-S", "-c", _PROBE_SCRIPT])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={}, cwd="/",
                              pass_fds=(fd_r,) if fd_r is not None else (), **popen_identity(host))
    except (OSError, subprocess.SubprocessError) as err:
        return False, str(err), []
    finally:
        if fd_r is not None:
            os.close(fd_r)
    if done.returncode != 0:
        return False, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1], []
    return True, "", done.stdout.split()


def probe(policy: SandboxPolicy | None = None) -> HostSandbox:
    """Find out what this machine provides by starting one probe jail (cached per policy for the process)."""
    return _probe(policy or SandboxPolicy())


@functools.lru_cache(maxsize=None)
def _probe(policy: SandboxPolicy) -> HostSandbox:
    bwrap = shutil.which("bwrap")
    python = _jail_python()
    gxx = shutil.which("g++")
    layout = tuple(_root_layout(python))
    base = HostSandbox(
        ok=False, reason="", bwrap=bwrap, bwrap_version="", python=python, gxx=os.path.realpath(gxx) if gxx else None,
        root_layout=layout, run_as_uid=None, uid_note="", seccomp=False, seccomp_note="", no_new_privs=False,
        disable_userns=False, tmpfs_size=False, harness_code=_compile_harness(python),
        setpriv=shutil.which("setpriv"),
    )
    if bwrap is None:
        return _replace(base, reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    try:
        helptext = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return _replace(base, reason=f"bwrap does not run: {err}")
    base = _replace(base, bwrap_version=version, disable_userns="--disable-userns" in helptext,
                    tmpfs_size="--size" in helptext and "--perms" in helptext)
    # Drop to an unprivileged host uid when we are root and that uid can read the interpreter.
    if os.geteuid() == 0:
        if _world_readable(python):
            base = _replace(base, run_as_uid=policy.host_uid, uid_note=f"dropped from root to uid {policy.host_uid}")
        else:
            base = _replace(base, uid_note=f"kept root: {python} is not readable by uid {policy.host_uid}")
    else:
        base = _replace(base, uid_note="not root: jails run as our own uid")
    seccomp_ok, seccomp_note = seccomp.supported(), ""
    if not seccomp_ok:
        seccomp_note = f"no syscall table for {platform.machine()}"
    attempts = [(base, seccomp_ok)]
    if base.run_as_uid is not None:  # unprivileged user namespaces may be off while root can still create them
        attempts.append((_replace(base, run_as_uid=None, uid_note="kept root: unprivileged user namespaces are "
                                  "unavailable for the dropped uid"), seccomp_ok))
    errors = []
    for candidate, use_seccomp in attempts:
        ok, error, fields = _run_probe(candidate, policy, use_seccomp)
        if not ok and use_seccomp:
            ok_plain, _error, fields = _run_probe(candidate, policy, False)
            if ok_plain:
                ok, use_seccomp, seccomp_note = True, False, f"bwrap refused the filter: {error}"
        if not ok:
            errors.append(error)
            continue
        if len(fields) < 3 or fields[2] != "1":
            return _replace(candidate, reason=f"{python} inside the jail is older than 3.9")
        support = cgroups.detect()
        atexit.register(cgroups.remove_bases, support)  # the per-process parent directories, once empty
        return _replace(
            candidate, ok=True, seccomp=use_seccomp and fields[1] == "2", seccomp_note=seccomp_note,
            no_new_privs=fields[0] == "1", cgroups=support,
        )
    return _replace(base, reason=f"bwrap cannot start a jail: {'; '.join(errors)}")


def _replace(host: HostSandbox, **changes: object) -> HostSandbox:
    from dataclasses import replace

    return replace(host, **changes)  # type: ignore[arg-type]
