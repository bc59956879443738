"""The math worker process: parses golds and checks answers with Math-Verify, one request at a time.

Workers are forked by a zygote (``python -m ring_async.verifiers.math_worker --zygote``) that has imported sympy
and Math-Verify once: a new or replacement worker is a fork of it, milliseconds instead of the second an interpreter
takes to import sympy. (multiprocessing's spawn/forkserver would re-import the caller's ``__main__`` in every worker;
the zygote depends on nothing of the caller.) The zygote receives one end of a socketpair per worker over its control
socket (SCM_RIGHTS), forks, and answers with the worker's pid.

Each worker runs under an address-space rlimit. Math-Verify's own signal-based timeouts
are off (they turn a timeout into ``False``, i.e. "incorrect"); instead a soft deadline (SIGALRM, this process's
main thread) raises a BaseException that Math-Verify's ``except Exception`` handlers cannot swallow, and reports
``unverifiable``. What a signal cannot interrupt (a huge power inside GMP) the pool's hard deadline kills.

Requests and replies are tuples over a multiprocessing connection:

    ("parse_gold", gold)                        -> ("ok", blob) | ("unparseable", reason)
    ("check", gold, blob_or_None, answer)       -> (verdict, reason, blob_or_None)

``blob`` is the pickled parse of a gold: parsed once (when a data set loads), then shipped with each check, so no
worker parses a known gold again.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import resource
import signal
import socket
import sys
from multiprocessing.connection import Connection
from typing import Any

# Imported here, not in the worker function, so a forkserver that preloads this module has sympy and
# Math-Verify loaded already when it forks a new worker.
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

GOLD_CACHE = 4096
EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())


class SoftDeadline(BaseException):
    """Raised by SIGALRM; a BaseException so that library code catching Exception lets it through."""


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise SoftDeadline()


def wrap(text: str) -> str:
    """Math-Verify extracts from LaTeX delimiters: the extracted answer (and the gold) go inside ``$...$``."""
    if "\\boxed" in text or text.lstrip().startswith("$"):
        return text
    return f"${text}$"


def parse_math(text: str) -> list[Any]:
    return parse(wrap(text), extraction_config=EXTRACTION, parsing_timeout=None)  # type: ignore[arg-type]


def has_expression(parsed: list[Any]) -> bool:
    """Math-Verify falls back to the raw string when LaTeX does not parse; a gold needs a real expression."""
    return any(not isinstance(item, str) for item in parsed)


class Checker:
    def __init__(self) -> None:
        self.golds: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()

    def gold(self, text: str, blob: bytes | None) -> tuple[list[Any], bytes | None]:
        """The parsed gold, and its blob when this call parsed it (so the caller can keep it)."""
        cached = self.golds.get(text)
        if cached is not None:
            self.golds.move_to_end(text)
            return cached, None
        fresh = None
        if blob is not None:
            parsed = pickle.loads(blob)  # made by a worker like this one, from our own pickle.dumps
        else:
            parsed = parse_math(text)
            fresh = _dump(parsed)
        self.golds[text] = parsed
        if len(self.golds) > GOLD_CACHE:
            self.golds.popitem(last=False)
        return parsed, fresh

    def handle(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        op = request[0]
        if op == "parse_gold":
            parsed = parse_math(request[1])
            if not has_expression(parsed):
                return ("unparseable", "Math-Verify found no expression")
            return ("ok", _dump(parsed))
        if op == "check":
            _, gold_text, blob, answer = request
            gold, fresh = self.gold(gold_text, blob)
            if not has_expression(gold):
                return ("unverifiable", "gold_unparseable", fresh)
            parsed = parse_math(answer)
            if not parsed:
                return ("incorrect", "answer_unparseable", fresh)
            ok = verify(gold, parsed, timeout_seconds=None)
            return ("correct" if ok else "incorrect", "", fresh)
        if op == "ping":  # liveness, and the limits this worker runs under
            return ("pong", os.getpid(), resource.getrlimit(resource.RLIMIT_AS)[0])
        raise ValueError(f"unknown request {op!r}")


def _dump(parsed: list[Any]) -> bytes | None:
    try:
        return pickle.dumps(parsed)
    except Exception:  # an unpicklable parse: workers will parse this gold themselves
        return None


class ErrorTrap(logging.Handler):
    """Math-Verify turns every exception inside a comparison into ``False`` ("incorrect") and logs it. A
    MemoryError or RecursionError there means we could not decide, so the worker reads the log to tell."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[type[BaseException]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            self.seen.append(record.exc_info[0])


def _install_error_trap() -> ErrorTrap:
    logging.getLogger().addHandler(logging.NullHandler())  # no stderr noise from other libraries' warnings
    trap = ErrorTrap()
    logger = logging.getLogger("math_verify")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(trap)
    logger.propagate = False
    return trap


def serve(conn: Connection, memory_limit_bytes: int, soft_deadline_s: float) -> None:
    """Worker main loop. Exits after a MemoryError (the interpreter state may be damaged); the pool respawns."""
    trap = _install_error_trap()
    with open("/proc/self/statm", "rb") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + memory_limit_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal goes to the pool's owner, not here
    checker = Checker()
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        fatal = False
        trap.seen.clear()
        try:
            if soft_deadline_s > 0:  # 0: no soft deadline, the pool's hard deadline alone
                signal.setitimer(signal.ITIMER_REAL, soft_deadline_s)
            try:
                reply = checker.handle(request)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if any(issubclass(kind, MemoryError) for kind in trap.seen):
                raise MemoryError()
            if any(issubclass(kind, RecursionError) for kind in trap.seen):
                raise RecursionError()
        except SoftDeadline:
            reply = ("unverifiable", "timeout", None)
        except MemoryError:
            reply, fatal = ("unverifiable", "memory_limit", None), True
        except RecursionError:
            reply = ("unverifiable", "recursion_limit", None)
        except Exception as err:  # a Math-Verify or sympy bug on this input: it says nothing about the answer
            reply = ("unverifiable", f"checker_error: {type(err).__name__}", None)
        if request[0] == "parse_gold" and reply[0] == "unverifiable":
            reply = ("unparseable", reply[1])
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        if fatal:
            return


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies (a worker stuck in GMP never reads the EOF that would end it)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def zygote(control: socket.socket, memory_limit_bytes: int, soft_deadline_s: float) -> None:
    """Fork one worker per request on ``control``: the request carries the worker's socket; the reply is its pid."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel; the pool kills them by pidfd
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(control, 16, 1)
        except OSError:
            return
        if not fds:
            return  # the pool closed the control socket
        pid = os.fork()
        if pid == 0:
            control.close()
            _die_with_parent()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                serve(Connection(fds[0]), memory_limit_bytes, soft_deadline_s)
            finally:
                os._exit(0)
        os.close(fds[0])
        control.sendall(pid.to_bytes(8, "big"))


def main(argv: list[str]) -> None:
    if len(argv) != 4 or argv[0] != "--zygote":
        raise SystemExit("usage: python -m ring_async.verifiers.math_worker --zygote FD MEMORY_BYTES SOFT_DEADLINE_S")
    _die_with_parent()
    zygote(socket.socket(fileno=int(argv[1])), int(argv[2]), float(argv[3]))


if __name__ == "__main__":
    main(sys.argv[1:])
