"""The in-jail harness: runs inside bubblewrap as ``python3 -I -S -B``, pid 1 of the jail's pid namespace.

It is the only trusted code inside the jail and never executes the program itself: every test case (and a C++
compile) runs in a forked child with its own stdin/stdout/stderr pipes, rlimits and a clean file-descriptor table,
so the program never holds the channel to the host. Being pid 1 of the namespace, it cannot be killed or stopped
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

Host-to-harness frames are marshal (trusted direction, no import needed); harness-to-host frames are JSON, which
the host can parse safely whatever a compromised jail sends. Expected outputs never enter the jail: the host compares.

Start-up cost is the point of a warm jail, so this file imports almost nothing (no json, no signal, not even os: each
costs milliseconds per jail; ``posix`` is os's built-in C half). The program's own standard-library imports from a safe list are imported here, once,
before the cases fork, so each case finds them loaded. Standard library only: this runs on the system interpreter
inside a read-only root that has no ring-async installed.
"""

import gc
import marshal
import posix as os  # not ``import os``: that loads os, stat, posixpath and _collections_abc (~1.5 ms a jail)
import sys

HOST_IN = 0
HOST_OUT = 1
RESULT_FD = 3
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

    def apply(self, memory_base_bytes):
        import resource

        cpu = int(self.cpu_s) + 2  # coarse backstop (1 s granularity): the harness kills at the exact CPU limit
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
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


def _cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _kill_others():
    """SIGKILL every other process of the jail and reap them all. We are pid 1: orphans (daemons, fork bombs)
    are re-parented to us, and kill(-1) reaches everything in the namespace but us."""
    import time

    for _ in range(1000):
        try:
            os.kill(-1, SIGKILL)
        except ProcessLookupError:
            pass
        try:
            while True:
                pid, _status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
        except ChildProcessError:
            return  # no children left
        time.sleep(0.0005)


# -- running one child -----------------------------------------------------------------------------------------------


def _run_child(target, stdin_bytes, limits, python_child, memory_base):
    """Fork a child that runs ``target()`` under ``limits``; collect its output, rusage and how it ended.

    A Python child reports on a result pipe (fd 3) and inherits this interpreter's mappings, so its address-space
    limit is on top of ``memory_base``; an exec'd child starts from nothing.
    """
    import select
    import time

    stdin_fd = os.memfd_create("stdin", 0)
    _write_all(stdin_fd, stdin_bytes)
    os.lseek(stdin_fd, 0, 0)  # SEEK_SET
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe() if python_child else (None, None)
    start = time.monotonic()
    gc.freeze()  # what the harness made since start-up is not copied on write either
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            # The program gets a working collector: with it off (the harness's setting) code that makes reference
            # cycles grows until it hits the memory limit, a false memory_limit verdict.
            gc.enable()
            os.dup2(stdin_fd, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            if res_w is not None:
                os.dup2(res_w, RESULT_FD)
            os.closerange(RESULT_FD + 1 if res_w is not None else RESULT_FD, 1 << 20)
            limits.apply(memory_base)
            target()
        finally:
            os._exit(127)
    for fd in (stdin_fd, out_w, err_w, res_w):
        if fd is not None:
            os.close(fd)
    pidfd = os.pidfd_open(pid)
    buffers = {out_r: bytearray(), err_r: bytearray()}
    if res_r is not None:
        buffers[res_r] = bytearray()
    poller = select.poll()
    for fd in buffers:
        poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    open_fds = set(buffers)
    killed_for = None
    stderr_total = 0
    exited = False
    deadline = start + limits.wall_s
    check_every = min(0.05, max(0.005, limits.cpu_s / 8))
    next_cpu_check = start + check_every
    while not exited:
        now = time.monotonic()
        if now >= deadline:
            killed_for = "wall_time"
            break
        for fd, _event in poller.poll(max(0.0, min(deadline, next_cpu_check) - now) * 1000):
            if fd == pidfd:
                exited = True
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            buf = buffers[fd]
            buf += chunk
            if fd == err_r:
                stderr_total += len(chunk)
                del buf[:-STDERR_TAIL]
                if stderr_total > limits.output_bytes:
                    killed_for = "output"
            elif len(buf) > limits.output_bytes:
                killed_for = "output"
        if killed_for:
            break
        if not exited and time.monotonic() >= next_cpu_check:
            # RLIMIT_CPU has one-second granularity; the exact limit is enforced here.
            if _cpu_seconds(pid) > limits.cpu_s:
                killed_for = "cpu_time"
                break
            next_cpu_check = time.monotonic() + check_every
    if not exited:
        try:
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    _kill_others()  # grandchildren die with the case, before the next case starts
    for fd in open_fds:  # every writer is dead now: drain to EOF
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf = buffers[fd]
            if fd == err_r:
                buf += chunk
                del buf[:-STDERR_TAIL]
            elif len(buf) <= limits.output_bytes:
                buf += chunk
                if len(buf) > limits.output_bytes and killed_for is None:
                    killed_for = "output"
    for fd in buffers:
        os.close(fd)
    os.close(pidfd)
    return {
        "status_word": status,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": wall,
        "killed_for": killed_for,
        "stdout": bytes(buffers[out_r][: limits.output_bytes]),
        "stderr": bytes(buffers[err_r]),
        "report": bytes(buffers[res_r]) if res_r is not None else b"",
    }


def _classify(run, limits, python, mode="stdio"):
    """The harness's view of one run: a status, a reason and the raw facts (the host has the final word)."""
    word = run["status_word"]
    exit_code = os.WEXITSTATUS(word) if os.WIFEXITED(word) else None
    sig = os.WTERMSIG(word) if os.WIFSIGNALED(word) else None
    report = _parse_report(run["report"]) if python else {}
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


def _parse_report(data):
    """The child's report: ``key=value`` lines, the result last (it may contain anything). Written by harness code
    in the child, but the child also runs the program, so the report is treated as untrusted text."""
    report = {}
    text = data.decode("utf-8", "replace")
    while text:
        line, sep, rest = text.partition("\n")
        key, _, value = line.partition("=")
        if key == "result":
            report["result"] = text[len("result="):]
            break
        if key in ("error", "message", "done"):
            report[key] = value[:500]
        text = rest if sep else ""
    return report


# -- the child side ---------------------------------------------------------------------------------------------------


def _report(lines):
    try:
        _write_all(RESULT_FD, "".join(lines).encode("utf-8", "replace"))
    except BaseException:
        pass


def _new_stdio():
    """The sys.stdin/stdout/stderr of a Python case: text streams on fds 0, 1 and 2 (stdin buffered and seekable,
    stdout buffered, stderr written through)."""
    import io

    return (io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8"),
            io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 16), encoding="utf-8"),
            io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", write_through=True))


def _stdio_template():
    """The case's stdio objects, built once per job here rather than in every case child (where building them
    cost a third of the child's page faults): the harness never uses them, so each forked child starts from a
    pristine copy of its own. They are built on file descriptors of the kinds the child has on 0, 1 and 2 (a memfd
    at offset 0, pipes), so their state (stdin seekable at position 0, stdout and stderr not seekable) is what
    building them in the child gives. Our own fds 0-2 (the host channel and stderr) are put back before anything
    else runs."""
    stdin_fd = os.memfd_create("stdin", 0)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    try:
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        return _new_stdio()
    finally:
        for fd, copy in enumerate(saved):
            os.dup2(copy, fd)
            os.close(copy)
        for fd in (stdin_fd, out_r, out_w, err_r, err_w):
            os.close(fd)


def _python_child(code, mode, entry, args, stdio):
    """Runs in the forked child: executes the program (and calls the entry point) and reports on fd 3."""
    import builtins
    import _signal

    _signal.signal(SIGXFSZ, SIG_DFL)  # over the file-size limit means killed, not a silent OSError
    sys.stdin, sys.stdout, sys.stderr = stdio
    sys.argv = ["solution.py"]
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
    try:
        sys.stdout.flush()
    except BaseException as err:
        if exit_code == 0:
            exit_code = 1
            lines = ["error=%s\n" % type(err).__name__, "message=flushing stdout failed\n"]
    _report(lines)
    os._exit(exit_code)


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
    facts = _classify(_run_child(lambda: _exec_child(argv[0], argv), b"", limits, False, 0), limits, python=False)
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
    python = job["lang"] == "python"
    stdio = _stdio_template() if python else None
    memory_base = _vm_size_bytes() if python else 0
    for index, case in enumerate(job["cases"]):
        if python:
            stdin = case.encode() if job["mode"] == "stdio" else b""
            target = lambda case=case: _python_child(code, job["mode"], job.get("entry"), case, stdio)  # noqa: E731
        else:
            stdin = case.encode()
            target = lambda: _exec_child(code, ["solution"])  # noqa: E731
        facts = _classify(_run_child(target, stdin, limits, python, memory_base), limits, python, job["mode"])
        if job["mode"] == "function":
            facts["stdout"] = facts["stdout"][:256]  # print-debugging only; the result travels separately
        facts["event"] = "case"
        facts["index"] = index
        _send(facts)
        if facts["status"] != "ok":
            return  # a failed run decides the verdict; the remaining cases cannot change it


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
