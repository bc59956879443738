"""The in-jail harness: runs inside bubblewrap as ``python3 -I -S -B``, pid 1 of the jail's pid namespace.

It is the only trusted code inside the jail and never executes the program itself: a Python program's cases run
in a forked runner (one per program; a fresh one after a case that ends it, and for a second look at a case that
failed in a runner that served earlier ones), a C++ compile and each C++ case in a forked, exec'd child; each with
its own stdin/stdout/stderr, rlimits and a clean file-descriptor table, so the program never holds the channel to
the host. Being pid 1 of the namespace, it cannot be killed or stopped
from inside (the kernel drops SIGKILL/SIGSTOP sent to a namespace's init by its own processes), and it makes itself
non-dumpable so no child can open its memory or file descriptors through /proc.

Protocol (frames are a 4-byte big-endian length and a payload):

    host -> harness   marshal code of this file         read by the boot stub on the command line (policy.py)
    harness -> host   b"R"                              ready, waiting for the job
    host -> harness   marshal {job}                     language, mode, source, inputs, limits (never outputs)
    host -> harness   marshal {"token": ...}            read only after the last case: never in a child's memory
    harness -> host   JSON {"event": "compile", ...}    once
    harness -> host   JSON {"event": "case", ...}       per case, in order; stops after the first failed run
    harness -> host   JSON {"event": "done", "token": ...}

Inside the jail, the harness hands a runner a case as its 4-byte index on the runner's fd 4; the runner answers with
one framed report (``key=value`` lines) on its fd 3 once the program's run has ended and its output is flushed. The
runner's measurements are not trusted: the harness takes the case's CPU time from /proc and enforces every limit
itself.

Host-to-harness frames are marshal (trusted direction, no import needed); harness-to-host frames are JSON, which
the host can parse safely whatever a compromised jail sends. Expected outputs never enter the jail: the host compares.

Start-up cost is the point of a warm jail, so this file imports almost nothing (no json, no signal, not even os: each
costs milliseconds per jail; ``posix`` is os's built-in C half). The program's own standard-library imports from a
safe list are imported here, once, before the runner forks. Standard library only: this runs on the system interpreter
inside a read-only root that has no ring-async installed.
"""

import gc
import marshal
import posix as os  # not ``import os``: that loads os, stat, posixpath and _collections_abc (~1.5 ms a jail)
import sys

HOST_IN = 0
HOST_OUT = 1
RESULT_FD = 3  # a Python runner's reports
CONTROL_FD = 4  # a Python runner's next case
STDERR_TAIL = 4096
CHILD_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
PR_SET_DUMPABLE = 4
SIGKILL, SIGXCPU, SIGXFSZ, SIGPIPE = 9, 24, 25, 13  # x86-64 / generic Linux numbering
SIG_DFL = 0

# Standard-library modules that are side-effect free on import and common in solutions. When the program imports
# one of them, the harness imports it before forking the cases (once per program instead of once per case).
PREIMPORTABLE = frozenset((
    "abc", "array", "bisect", "calendar", "cmath", "collections", "contextlib", "copy", "dataclasses", "datetime",
    "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "io", "itertools", "json", "math", "numbers",
    "operator", "os", "queue", "random", "re", "statistics", "string", "struct", "sys", "textwrap", "threading",
    "time", "types", "typing", "unicodedata", "weakref",
))


# -- channel to the host -------------------------------------------------------------------------------------------


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("host closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send(obj):
    data = to_json(obj).encode("ascii")
    _write_all(HOST_OUT, len(data).to_bytes(4, "big") + data)


def _receive():
    size = int.from_bytes(_read_exact(HOST_IN, 4), "big")
    return marshal.loads(_read_exact(HOST_IN, size))


# -- JSON without the json module ----------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
# The same escapes for every ASCII character that needs one, as a str.translate table: ASCII text (nearly every
# frame: a case's stdout and stderr) is escaped in C instead of character by character.
_ASCII_ESCAPES = {code: _ESCAPES.get(chr(code), "\\u%04x" % code) for code in (*range(0x20), 0x22, 0x5C, 0x7F)}


class Unserialisable(Exception):
    pass


def _json_str(text):
    if text.isascii():
        # Program output is mostly printable ASCII, newlines and tabs: C-speed replaces; text with other control
        # characters (or DEL) goes through the table.
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        escaped = escaped.replace("\r", "\\r")
        if escaped.isprintable():
            return '"' + escaped + '"'
        return '"' + text.translate(_ASCII_ESCAPES) + '"'
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | (code >> 10), 0xDC00 | (code & 0x3FF)))
        else:
            out.append("\\u%04x" % code)
    out.append('"')
    return "".join(out)


def to_json(value, depth=0):
    """ASCII JSON of plain data. Uses the base types' own methods, never the value's: an ``int`` subclass with a
    lying ``__repr__``/``__eq__`` is written as the integer it really holds, and anything that is not plain data
    (sets, objects, generators) is refused rather than guessed."""
    if depth > 200:
        raise Unserialisable("nested deeper than 200 levels")
    kind = type(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError as err:  # more digits than int-to-str conversion allows
            raise Unserialisable(str(err)) from None
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, str):
        return _json_str(str.__str__(value))
    if isinstance(value, (list, tuple)):
        items = list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)
        return "[" + ",".join(to_json(item, depth + 1) for item in items) + "]"
    if isinstance(value, dict):
        parts = []
        for key, item in dict.items(value):
            if not isinstance(key, str):
                raise Unserialisable("dict key %s is not a string" % type(key).__name__)
            parts.append(_json_str(str.__str__(key)) + ":" + to_json(item, depth + 1))
        return "{" + ",".join(parts) + "}"
    raise Unserialisable("%s is not JSON data" % kind.__name__)


# -- hardening and limits --------------------------------------------------------------------------------------------


def _set_non_dumpable():
    """prctl(PR_SET_DUMPABLE, 0) through _ctypes (the ctypes package costs a millisecond more to import)."""
    import _ctypes

    class _Int(_ctypes._SimpleCData):
        _type_ = "i"

    class _Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = _Int

    prctl = _Function(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE) failed")


PY_FILE_INPUT = 257  # Include/compile.h
PYCF_SOURCE_IS_UTF8 = 0x0100
PYCF_IGNORE_COOKIE = 0x0800


def compile_program(source):
    """``compile(source, "solution.py", "exec", dont_inherit=True)``, by the same compiler with the same flags, but
    through the C API (Py_CompileStringExFlags). The builtin first checks whether its argument is an AST object,
    which creates the ~120 Python classes of the ast module on first use: ~1.5 ms of CPU in every jail, for a
    program compiled exactly once. Falls back to the builtin where _ctypes or the symbol is missing."""
    if "\0" in source:  # C would stop at the first NUL: the builtin raises what this interpreter raises
        return compile(source, "solution.py", "exec", dont_inherit=True)
    data = source.encode("utf-8")  # a lone surrogate fails here, as it does in compile()
    try:
        import _ctypes  # already loaded by _set_non_dumpable

        class _PyObject(_ctypes._SimpleCData):
            _type_ = "O"

        class _Int(_ctypes._SimpleCData):
            _type_ = "i"

        class _CompilerFlags(_ctypes.Array):  # PyCompilerFlags: int cf_flags, int cf_feature_version
            _type_ = _Int
            _length_ = 2

        class _PythonApi(_ctypes.CFuncPtr):  # called with the GIL held; a set exception is raised
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_PYTHONAPI
            _restype_ = _PyObject

        api = _PythonApi(_ctypes.dlsym(_ctypes.dlopen(None), "Py_CompileStringExFlags"))
    except (ImportError, AttributeError, OSError, TypeError):
        return compile(source, "solution.py", "exec", dont_inherit=True)
    # The flags compile() passes for a str: UTF-8 text whose coding cookie, if any, is ignored; no inherited
    # __future__ features; this interpreter's grammar; optimize -1 (the interpreter's -O level).
    flags = _CompilerFlags(PYCF_SOURCE_IS_UTF8 | PYCF_IGNORE_COOKIE, sys.version_info[1])
    return api(data, b"solution.py", PY_FILE_INPUT, flags, -1)


class Limits:
    """The rlimits and caps of one child, applied after fork and before the program (or compiler) runs."""

    def __init__(self, cpu_s, wall_s, memory_bytes, file_size_bytes, max_processes, max_open_files, output_bytes,
                 stack_bytes=None):
        self.cpu_s = cpu_s
        self.wall_s = wall_s
        self.memory_bytes = memory_bytes
        self.file_size_bytes = file_size_bytes
        self.max_processes = max_processes
        self.max_open_files = max_open_files
        self.output_bytes = output_bytes
        self.stack_bytes = stack_bytes

    def apply(self, memory_base_bytes, cases=1):
        import resource

        # A coarse backstop (1 s granularity): the harness kills at the exact CPU limit. A runner's soft limit is
        # raised case by case (Child.run_case); its hard limit covers all of its cases.
        cpu = int(self.cpu_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cases * cpu + 1))
        memory = memory_base_bytes + self.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_bytes, self.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_open_files, self.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.stack_bytes:
            resource.setrlimit(resource.RLIMIT_STACK, (self.stack_bytes, self.stack_bytes))
        # RLIMIT_NPROC counts the tasks of this uid in the jail's user namespace: the harness (single-threaded,
        # the only other process once the previous case is reaped) and this child.
        resource.setrlimit(resource.RLIMIT_NPROC, (2 + self.max_processes, 2 + self.max_processes))


def _vm_size_bytes():
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name (the state letter first); [] once it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _cpu_seconds(pid):
    """CPU time of a live process: all its threads, and its children it has waited for (clock ticks)."""
    try:
        return sum(int(value) for value in _stat_fields(pid)[11:15]) / os.sysconf("SC_CLK_TCK")
    except ValueError:
        return 0.0


def _kill_others(keep=None):
    """SIGKILL every process of the jail but us (and ``keep``, a runner that serves the next case) and wait until
    they are dead. We are pid 1: orphans (daemons, fork bombs) are re-parented to us."""
    import time

    if keep is None:  # kill(-1) reaches everything in the namespace but us
        for _ in range(1000):
            try:
                os.kill(-1, SIGKILL)
            except ProcessLookupError:
                pass
            if not _reap_children():
                return  # no children left
            time.sleep(0.0005)
        return
    killed = set()
    for _ in range(1000):
        victims = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if pid not in (1, keep)
                   and _stat_fields(pid)[:1] not in ([], [b"Z"])]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, SIGKILL)
            except ProcessLookupError:
                pass
        killed.update(victims)
        time.sleep(0.0005)
    for pid in killed:  # reap the orphans among them; the runner reaps its own children before its next case
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


# -- running children ------------------------------------------------------------------------------------------------


class Child:
    """A forked child running ``target()`` under ``limits``: stdin a memfd, stdout and stderr pipes to us. A Python
    runner also has its report pipe on fd 3 and reads the index of its next case from fd 4; it inherits this
    interpreter's mappings, so its address-space limit is on top of ``memory_base``, whereas an exec'd child starts
    from nothing."""

    def __init__(self, target, stdin_bytes, limits, memory_base, runner=False, cases=1):
        import select

        stdin_fd = os.memfd_create("stdin", 0)
        _write_all(stdin_fd, stdin_bytes)
        os.lseek(stdin_fd, 0, 0)  # SEEK_SET
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe() if runner else (None, None)
        ctl_r, ctl_w = os.pipe() if runner else (None, None)
        wanted = [stdin_fd, out_w, err_w] + ([res_w, ctl_r] if runner else [])
        gc.freeze()  # what the harness made since start-up is not copied on write either
        pid = os.fork()
        if pid == 0:  # the child: never returns
            try:
                # The program gets a working collector: with it off (the harness's setting) code that makes
                # reference cycles grows until it hits the memory limit, a false memory_limit verdict.
                gc.enable()
                for index, fd in enumerate(wanted):  # out of the way first: a source may sit on a target number
                    os.dup2(fd, 100 + index)
                for index in range(len(wanted)):
                    os.dup2(100 + index, index)
                os.closerange(len(wanted), 1 << 20)
                limits.apply(memory_base, cases)
                target()
            finally:
                os._exit(127)
        for fd in wanted:
            os.close(fd)
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.out_r, self.err_r, self.res_r, self.ctl_w = out_r, err_r, res_r, ctl_w
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)  # drained after a report without waiting for writers that are still alive
        self.poller = select.poll()
        for fd in (out_r, err_r, res_r, self.pidfd):
            if fd is not None:
                self.poller.register(fd, select.POLLIN)
        self.reports = bytearray()
        self.served = 0  # cases started in this child
        self.status = None  # (status word, CPU seconds) once reaped

    def run_case(self, index, limits):
        """Hand a runner case ``index`` and watch it until it reports the case or ends."""
        import resource

        cpu_base = _cpu_seconds(self.pid)
        backstop = int(cpu_base) + int(limits.cpu_s) + 3
        try:  # the runner's soft CPU limit, raised for this case (the hard one covers all cases; see Limits)
            resource.prlimit(self.pid, resource.RLIMIT_CPU, (backstop, resource.prlimit(self.pid,
                                                                                        resource.RLIMIT_CPU)[1]))
        except (OSError, ValueError):
            pass  # over the hard limit or already gone: what the case does next tells
        try:
            _write_all(self.ctl_w, index.to_bytes(4, "big"))
        except OSError:
            pass  # it died after its last case: watch() reaps it and reports how it ended
        return self.watch(limits, cpu_base)

    def watch(self, limits, cpu_base=0.0):
        """Until the child ends, or (a runner) a whole report frame arrives, enforcing the case's wall-clock, CPU
        and output limits. Returns the run's facts."""
        import time

        self.served += 1
        start = time.monotonic()
        out, err = bytearray(), bytearray()
        report = None
        killed_for = None
        stderr_total = 0
        deadline = start + limits.wall_s
        check_every = min(0.05, max(0.005, limits.cpu_s / 8))
        next_cpu_check = start + check_every
        exited = False
        while report is None and not exited:
            now = time.monotonic()
            if now >= deadline:
                killed_for = "wall_time"
                break
            for fd, _event in self.poller.poll(max(0.0, min(deadline, next_cpu_check) - now) * 1000):
                if fd == self.pidfd:
                    exited = True
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.poller.unregister(fd)
                    continue
                if fd == self.err_r:
                    err += chunk
                    stderr_total += len(chunk)
                    del err[:-STDERR_TAIL]
                    if stderr_total > limits.output_bytes:
                        killed_for = "output"
                elif fd == self.out_r:
                    out += chunk
                    if len(out) > limits.output_bytes:
                        killed_for = "output"
                else:
                    self.reports += chunk
                    report = self._next_report()
                    if len(self.reports) > limits.output_bytes + 4:
                        killed_for = "output"
            if killed_for:
                break
            if report is None and not exited and time.monotonic() >= next_cpu_check:
                # RLIMIT_CPU has one-second granularity; the exact limit is enforced here.
                if _cpu_seconds(self.pid) - cpu_base > limits.cpu_s:
                    killed_for = "cpu_time"
                    break
                next_cpu_check = time.monotonic() + check_every
        if killed_for or exited:
            report = _parse_report(self._end(report) or b"")
            cpu_s = max(0.0, self.status[1] - cpu_base)
        else:  # a runner waiting for its next case; it flushed this one's output before reporting
            report = _parse_report(report)
            cpu_s = max(_cpu_seconds(self.pid) - cpu_base, _reported_cpu(report))
            # What the case started dies with the case, as with a process of its own, and before the pipes are
            # drained: no writer but the waiting runner is left, so the drain below ends.
            _kill_others(keep=self.pid)
        for fd, buf in ((self.out_r, out), (self.err_r, err)):
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not chunk:
                    break
                buf += chunk
                if fd == self.err_r:
                    del buf[:-STDERR_TAIL]
                elif len(buf) > limits.output_bytes:
                    killed_for = killed_for or "output"
                    break
        return {
            "status_word": self.status[0] if self.status else None,
            "cpu_s": cpu_s,
            "wall_s": time.monotonic() - start,
            "killed_for": killed_for,
            "stdout": bytes(out[: limits.output_bytes]),
            "stderr": bytes(err),
            "report": report,  # parsed (empty for an exec'd child, which reports nothing)
            "leave": self.status is not None or report.get("leave") == "1",
        }

    def _next_report(self):
        if len(self.reports) < 4:
            return None
        size = int.from_bytes(self.reports[:4], "big")
        if len(self.reports) < 4 + size:
            return None
        frame = bytes(self.reports[4: 4 + size])
        del self.reports[: 4 + size]
        return frame

    def _end(self, report):
        """Kill (if still running) and reap the child, kill whatever it left behind; a report it finished writing
        before it died still counts."""
        if self.status is None:
            try:
                os.kill(self.pid, SIGKILL)
            except ProcessLookupError:
                pass
            _, status, usage = os.wait4(self.pid, 0)
            self.status = (status, usage.ru_utime + usage.ru_stime)
            _kill_others()  # grandchildren die with it, before anything else starts
        if report is None and self.res_r is not None:
            try:
                while True:
                    chunk = os.read(self.res_r, 65536)
                    if not chunk:
                        break
                    self.reports += chunk
            except OSError:
                pass
            report = self._next_report()
        return report

    @property
    def alive(self):
        return self.status is None

    def close(self):
        self._end(b"")
        for fd in (self.out_r, self.err_r, self.res_r, self.ctl_w, self.pidfd):
            if fd is not None:
                os.close(fd)


def _run_child(target, stdin_bytes, limits):
    """One exec'd process (a compiler, a C++ case) from start to end."""
    child = Child(target, stdin_bytes, limits, 0)
    try:
        return child.watch(limits)
    finally:
        child.close()


def _reported_cpu(report):
    value = report.get("cpu", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


def _classify(run, limits, python, mode="stdio"):
    """The harness's view of one run: a status, a reason and the raw facts (the host has the final word)."""
    report = run["report"]
    word = run["status_word"]
    if word is None:  # a runner that finished the case: its exit status is the one the case would have ended with
        exit_code, sig = _exit_code(report.get("exit", "0")), None
    else:
        exit_code = os.WEXITSTATUS(word) if os.WIFEXITED(word) else None
        sig = os.WTERMSIG(word) if os.WIFSIGNALED(word) else None
    error = report.get("error")
    killed_for = run["killed_for"]
    if killed_for == "output" or sig == SIGXFSZ:
        status, reason = "output_limit", "output or file size over the limit"
    elif killed_for in ("cpu_time", "wall_time") or sig == SIGXCPU or run["cpu_s"] > limits.cpu_s:
        status, reason = "time_limit", killed_for or "cpu_time"
    elif error == "MemoryError" or (not python and b"std::bad_alloc" in run["stderr"]):
        status, reason = "memory_limit", "allocation failed under the memory limit"
    elif error == "Unserialisable" and exit_code == 0:
        status, reason = "unserialisable", "the function returned something that is not JSON data"
    elif sig is not None:
        status, reason = "runtime_error", "killed by signal %d" % sig
    elif exit_code != 0:
        status, reason = "runtime_error", "exit code %s" % exit_code
    elif error:
        status, reason = "runtime_error", error
    elif python and mode == "function" and "result" not in report:
        status, reason = "runtime_error", "the program ended without returning a result"
    else:
        status, reason = "ok", ""
    return {
        "status": status,
        "reason": reason,
        "exit_code": exit_code,
        "signal": sig,
        "error": error,
        "message": report.get("message", ""),
        "result": report.get("result"),
        "cpu_s": round(run["cpu_s"], 6),
        "wall_s": round(run["wall_s"], 6),
        "stdout": run["stdout"].decode("latin-1"),
        "stderr": run["stderr"].decode("utf-8", "replace"),
    }


def _exit_code(text):
    return int(text) if text.isdigit() and 0 <= int(text) < 256 else 1


def _parse_report(data):
    """A case's report: ``key=value`` lines, the result last (it may contain anything). Written by harness code
    in the runner, but the runner also runs the program, so the report is treated as untrusted text."""
    report = {}
    text = data.decode("utf-8", "replace")
    while text:
        line, sep, rest = text.partition("\n")
        key, _, value = line.partition("=")
        if key == "result":
            report["result"] = text[len("result="):]
            break
        if key in ("error", "message", "done", "exit", "cpu", "leave"):
            report[key] = value[:500]
        text = rest if sep else ""
    return report


# -- the runner side ---------------------------------------------------------------------------------------------------


def _report(lines):
    data = "".join(lines).encode("utf-8", "replace")
    try:
        _write_all(RESULT_FD, len(data).to_bytes(4, "big") + data)
    except BaseException:
        return False
    return True


def _new_stdio():
    """The sys.stdin/stdout/stderr of a Python case: text streams on fds 0, 1 and 2 (stdin buffered and seekable,
    stdout buffered, stderr written through)."""
    import io

    return (io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8"),
            io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 16), encoding="utf-8"),
            io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", write_through=True))


def _python_runner(code, job):
    """Runs in the forked runner: the cases the harness hands it (their index on fd 4), one after another, each a
    fresh run of the program (new globals, stdin, stdout and stderr), each reported on fd 3. It leaves after a
    case that fails or leaves threads behind, and when its channel is closed: the next case gets a fresh runner."""
    import builtins
    import _signal
    import time

    _signal.signal(SIGXFSZ, SIG_DFL)  # over the file-size limit means killed, not a silent OSError
    sys.argv = ["solution.py"]
    mode, entry, cases = job["mode"], job.get("entry"), job["cases"]
    while True:
        try:
            index = int.from_bytes(_read_exact(CONTROL_FD, 4), "big")
        except (EOFError, OSError):
            os._exit(127)  # the program closed or broke our channel; the harness drops us
        _reap_children()  # what the harness killed after the previous case
        stdin_fd = os.memfd_create("stdin", 0)
        _write_all(stdin_fd, cases[index].encode() if mode == "stdio" else b"")
        os.lseek(stdin_fd, 0, 0)
        os.dup2(stdin_fd, 0)
        os.close(stdin_fd)
        sys.stdin, sys.stdout, sys.stderr = _new_stdio()
        started = time.process_time()
        exit_code, lines, lingering = _run_case(code, mode, entry, cases[index], builtins)
        leave = bool(exit_code or lingering)
        head = ["exit=%d\n" % exit_code, "cpu=%.6f\n" % (time.process_time() - started), "leave=%d\n" % leave]
        if not _report(head + lines) or leave:
            os._exit(exit_code)


def _run_case(code, mode, entry, args, builtins):
    """One run of the program: its exit status, its report lines, and whether it left threads running."""
    exit_code = 0
    lines = []
    try:
        namespace = {"__name__": "__main__" if mode == "stdio" else "__solution__", "__builtins__": builtins,
                     "__file__": "solution.py"}
        exec(code, namespace)
        if mode == "function":
            value = _resolve_entry(namespace, entry)(*args)
            try:
                lines = ["result=" + to_json(value)]
            except (Unserialisable, RecursionError) as err:
                lines = ["error=Unserialisable\n", "message=the result is not JSON data: %s\n" % _one_line(err)]
        else:
            lines = ["done=1\n"]
    except SystemExit as err:
        status = err.code
        if status is None or status == 0:
            lines = ["done=1\n"] if mode == "stdio" else [
                "error=SystemExit\n", "message=the program exited before returning a result\n"]
        else:
            exit_code = status if isinstance(status, int) and 0 < status < 256 else 1
            lines = ["error=SystemExit\n", "message=exit status %s\n" % _one_line(status)]
    except MemoryError:
        exit_code = 1
        lines = ["error=MemoryError\n"]
    except BaseException as err:
        exit_code = 1
        try:
            lines = ["error=%s\n" % type(err).__name__, "message=%s\n" % _one_line(err)]
            import traceback  # only on failure: not worth a warm import in every jail

            traceback.print_exc(limit=8)
        except BaseException:
            lines = ["error=Exception\n"]
    # A failed run's verdict is known: its threads die with the runner rather than being waited for.
    lingering = _join_threads() if exit_code == 0 else True
    try:
        sys.stdout.flush()
    except BaseException as err:
        if exit_code == 0:
            exit_code = 1
            lines = ["error=%s\n" % type(err).__name__, "message=flushing stdout failed\n"]
    return exit_code, lines, lingering


def _join_threads():
    """Wait for the program's non-daemon threads, as an interpreter does before it exits (a program that does its
    work in a thread, the usual way to get a deep recursion stack, ends when that thread does). True when other
    threads (daemons) are still running: the runner must not carry them into the next case."""
    threading = sys.modules.get("threading")
    if threading is None:
        return False
    try:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
        return any(thread is not current for thread in threading.enumerate())
    except BaseException:
        return True


def _reap_children():
    """Reap every child that has ended; False when there are no children left at all."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        return False
    return True


def _one_line(value):
    try:
        return str(value).replace("\n", " ")[:500]
    except BaseException:
        return "?"


def _resolve_entry(namespace, entry):
    head, _, method = entry.partition(".")
    if head not in namespace:
        raise NameError("entry point %r is not defined" % head)
    target = namespace[head]
    if method:
        target = getattr(target(), method)  # LeetCode style "Solution.method": one fresh instance per case
    if not callable(target):
        raise TypeError("entry point %r is not callable" % entry)
    return target


def _exec_child(path, argv):
    import _signal

    _signal.signal(SIGXFSZ, SIG_DFL)
    _signal.signal(SIGPIPE, SIG_DFL)
    os.execve(path, argv, CHILD_ENV)


# -- the job ----------------------------------------------------------------------------------------------------------


def _limits(job, prefix=""):
    return Limits(
        cpu_s=job[prefix + "time_limit_s"],
        wall_s=job[prefix + "wall_limit_s"],
        memory_bytes=job[prefix + "memory_limit_bytes"],
        file_size_bytes=job["file_size_bytes"],
        max_processes=job["max_processes"],
        max_open_files=job["max_open_files"],
        output_bytes=job["output_limit_bytes"],
        stack_bytes=job.get(prefix + "stack_bytes"),
    )


def imported_modules(source):
    """Top-level module names of the ``import x`` / ``from x import y`` lines of a program (plain text scan: the
    harness never evaluates the program to find them)."""
    names = set()
    for line in source.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] not in ("import", "from"):
            continue
        if words[0] == "from":
            candidates = [words[1]]
        else:  # import a.b as c, d
            candidates = [part.split()[0] for part in line.strip()[len("import"):].split(",") if part.split()]
        for name in candidates:
            names.add(name.split(".")[0])
    return names


def _preimport(source):
    for name in sorted(imported_modules(source) & PREIMPORTABLE):
        try:
            __import__(name)
        except Exception:
            pass


def _compile(job):
    """Python: compile once here (compiling executes nothing). C++: run the compiler once, in a limited child."""
    if job["lang"] == "python":
        try:
            code = compile_program(job["source"])
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as err:
            return None, {"event": "compile", "ok": False, "reason": "%s: %s" % (type(err).__name__, _one_line(err))}
        _preimport(job["source"])
        return code, {"event": "compile", "ok": True}
    try:
        os.mkdir("/tmp/build")
    except FileExistsError:
        pass
    with open("/tmp/build/solution.cpp", "w", encoding="utf-8") as f:
        f.write(job["source"])
    argv = job["compile_argv"]
    limits = _limits(job, "compile_")
    facts = _classify(_run_child(lambda: _exec_child(argv[0], argv), b"", limits), limits, python=False)
    ok = facts["status"] == "ok" and _exists("/tmp/build/solution")
    reason = "" if ok else ("compiler failed" if facts["status"] == "runtime_error" else facts["reason"])
    return "/tmp/build/solution", {"event": "compile", "ok": ok, "reason": reason,
                                   "stderr": facts["stderr"][-STDERR_TAIL:], "cpu_s": facts["cpu_s"]}


def _exists(path):
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _run_job(job):
    code, frame = _compile(job)
    _send(frame)
    if not frame["ok"]:
        return
    limits = _limits(job)
    if job["lang"] == "python":
        cases = _python_cases(code, job, limits)
    else:
        cases = (_classify(_run_child(lambda: _exec_child(code, ["solution"]), case.encode(), limits), limits, False)
                 for case in job["cases"])
    for index, facts in enumerate(cases):
        if job["mode"] == "function":
            facts["stdout"] = facts["stdout"][:256]  # print-debugging only; the result travels separately
        facts["event"] = "case"
        facts["index"] = index
        _send(facts)
        if facts["status"] != "ok":
            return  # a failed run decides the verdict; the remaining cases cannot change it


def _python_cases(code, job, limits):
    """The facts of each Python case, in order, until the first failure. One forked runner serves case after case
    (a fork, its copy-on-write faults and an exit per program instead of per case: most of what a case cost); a
    fresh one takes over when it leaves. A case that fails in a runner that served earlier ones is run again in a
    fresh runner, whose verdict stands: whatever earlier runs left behind (memory, changed modules) never fails a
    case that a fresh process would pass."""
    memory_base = _vm_size_bytes()
    runner = None
    try:
        for index in range(len(job["cases"])):
            while True:
                if runner is None:
                    runner = Child(lambda: _python_runner(code, job), b"", limits, memory_base, runner=True,
                                   cases=len(job["cases"]))
                reused = runner.served > 0
                run = runner.run_case(index, limits)
                facts = _classify(run, limits, True, job["mode"])
                if run["leave"] or (facts["status"] != "ok" and reused):
                    runner.close()
                    runner = None
                if facts["status"] == "ok" or not reused:
                    break
            yield facts
            if facts["status"] != "ok":
                return
    finally:
        if runner is not None:
            runner.close()


def main():
    import resource

    _set_non_dumpable()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir("/tmp")
    # Forked cases must not copy-on-write the harness's objects: no collector passes over them.
    gc.disable()
    gc.freeze()
    _write_all(HOST_OUT, b"R")
    try:
        job = _receive()
    except EOFError:
        return  # the host dropped a warm jail it no longer needs
    try:
        _run_job(job)
    except Exception as err:  # a harness bug or a broken jail: the host retries on a fresh jail
        _send({"event": "harness_error", "error": "%s: %s" % (type(err).__name__, _one_line(err))})
        return
    token = _receive()["token"]
    _send({"event": "done", "token": token})


if __name__ == "__main__":
    main()
