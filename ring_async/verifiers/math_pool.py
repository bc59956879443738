"""A pool of math worker processes with hard deadlines.

Why processes: Math-Verify's timeouts use SIGALRM (main thread only) and no signal interrupts big-integer arithmetic
inside GMP. Each worker runs one request at a time under an address-space rlimit; a manager thread watches the
deadlines and SIGKILLs a worker that is past its hard deadline, answers its request ``unverifiable`` and forks a
replacement. Other requests keep flowing through the other workers meanwhile.

Workers are forked by a zygote process that has Math-Verify and sympy imported already (math_worker.py), so a
replacement costs a fork, not a fresh interpreter importing sympy.

Back-pressure: at most ``max_queue`` requests wait; ``submit`` blocks (up to its timeout) when the queue is full.
"""

from __future__ import annotations

import collections
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ring_async.verifiers.errors import VerifierError

WORKER_MODULE = "ring_async.verifiers.math_worker"
ZYGOTE_START_TIMEOUT_S = 120.0


class PoolFull(VerifierError):
    """The pool's queue stayed full for the whole submit timeout."""


@dataclass
class _Job:
    request: tuple[Any, ...]
    future: Future[tuple[Any, ...]]
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Worker:
    pid: int
    pidfd: int
    conn: multiprocessing.connection.Connection
    job: _Job | None = None
    deadline: float = 0.0

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for close in (self.conn.close, lambda: os.close(self.pidfd)):
            try:
                close()
            except OSError:
                pass


class _Zygote:
    """The process that forks workers (see math_worker.py)."""

    def __init__(self, memory_limit_bytes: int, soft_deadline_s: float) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.settimeout(ZYGOTE_START_TIMEOUT_S)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, "--zygote", str(theirs.fileno()), str(memory_limit_bytes),
                 str(soft_deadline_s)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()

    def fork_worker(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self.control, [b"F"], [theirs.fileno()])
            reply = b""
            while len(reply) < 8:
                chunk = self.control.recv(8 - len(reply))
                if not chunk:
                    raise OSError("the math zygote exited")
                reply += chunk
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        pid = int.from_bytes(reply, "big")
        pidfd = os.pidfd_open(pid)  # the worker is alive (it waits for its first request): no pid-reuse race
        return _Worker(pid, pidfd, multiprocessing.connection.Connection(ours.detach()))

    def close(self) -> None:
        self.control.close()  # the zygote exits on EOF; its workers die with it (PDEATHSIG)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class MathPool:
    def __init__(self, workers: int | None = None, deadline_s: float = 1.5, soft_deadline_s: float | None = 1.0,
                 memory_limit_mb: int = 1024, max_queue: int = 10_000) -> None:
        """``deadline_s``: the hard deadline (kill). ``soft_deadline_s``: SIGALRM inside the worker, which answers
        ``unverifiable`` and keeps the worker (None: hard deadline only)."""
        if soft_deadline_s is not None and not 0 < soft_deadline_s <= deadline_s:
            raise VerifierError("the soft deadline must be positive and not after the hard deadline")
        self.deadline_s = deadline_s
        self.soft_deadline_s = soft_deadline_s or 0.0
        self.memory_limit_bytes = memory_limit_mb << 20
        self.max_queue = max_queue
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.counters: collections.Counter[str] = collections.Counter()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._zygote: _Zygote | None = None
        self._workers: list[_Worker] = []
        # The manager thread starts the zygote and every worker: PR_SET_PDEATHSIG follows the thread that forked,
        # and this thread lives as long as the pool (the caller's thread may not).
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._manage, args=(max(1, workers or os.cpu_count() or 2),),
                                        name="math-pool", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise VerifierError(f"cannot start the math workers: {self._start_error}") from self._start_error

    @property
    def size(self) -> int:
        return len(self._workers)

    # -- public API -------------------------------------------------------------------------------------------------

    def submit(self, request: tuple[Any, ...], timeout: float | None = None) -> Future[tuple[Any, ...]]:
        """Queue one request; its future resolves to the worker's reply tuple (``("unverifiable", reason, None)``
        when the worker missed the hard deadline or died)."""
        job = _Job(request, Future())
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or len(self._queue) < self.max_queue, timeout):
                raise PoolFull(f"math pool queue stayed full ({self.max_queue} waiting) for {timeout}s")
            if self._closed:
                raise VerifierError("the math pool is closed")
            self._queue.append(job)
        self._wake()
        return job.future

    def call(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        return self.submit(request).result()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._wake()
        self._thread.join(timeout=10)
        for worker in self._workers:
            if worker.job is not None:
                worker.job.future.set_result(("unverifiable", "pool_closed", None))
            self._stop(worker)
        while self._queue:
            self._queue.popleft().future.set_result(("unverifiable", "pool_closed", None))
        if self._zygote is not None:
            self._zygote.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> MathPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"workers": len(self._workers), "queued": len(self._queue),
                    "busy": sum(1 for w in self._workers if w.job is not None), **self.counters}

    # -- workers ----------------------------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        if self._zygote is None:
            self._zygote = _Zygote(self.memory_limit_bytes, self.soft_deadline_s)
        try:
            worker = self._zygote.fork_worker()
        except OSError:
            # The zygote died (or was killed): start a new one and try once more.
            self._zygote.close()
            self._zygote = _Zygote(self.memory_limit_bytes, self.soft_deadline_s)
            worker = self._zygote.fork_worker()
        self.counters["spawned"] += 1
        return worker

    def _stop(self, worker: _Worker) -> None:
        worker.kill()

    def _replace(self, worker: _Worker, reason: str) -> None:
        """Kill a worker (past its deadline, or dead) and answer its request unverifiable."""
        job = worker.job
        worker.job = None
        self._stop(worker)
        self.counters[reason] += 1
        index = self._workers.index(worker)
        self._workers[index] = self._spawn()
        if job is not None:
            job.future.set_result(("unverifiable", reason, None))

    # -- the manager thread -----------------------------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _dispatch(self) -> None:
        for worker in list(self._workers):
            if worker.job is not None:
                continue
            with self._cond:
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._cond.notify_all()  # room in the queue for a blocked submitter
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                worker.conn.send(job.request)
            except (OSError, ValueError):
                with self._cond:
                    self._queue.appendleft(job)
                self._replace(worker, "worker_crashed")
                continue
            worker.job = job
            worker.deadline = time.monotonic() + self.deadline_s

    def _manage(self, workers: int) -> None:
        try:
            self._workers = [self._spawn() for _ in range(workers)]
        except BaseException as err:
            self._start_error = err
            for worker in self._workers:
                worker.kill()
            if self._zygote is not None:
                self._zygote.close()
            self._zygote = None
            self._workers = []
            with self._cond:
                self._closed = True
            return
        finally:
            self._started.set()
        while True:
            with self._cond:
                if self._closed:
                    return
            self._dispatch()
            busy = [w for w in self._workers if w.job is not None]
            now = time.monotonic()
            timeout = min([w.deadline - now for w in busy], default=0.5)
            ready = multiprocessing.connection.wait([w.conn for w in busy] + [self._wake_r],
                                                    max(0.0, min(timeout, 0.5)))
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            for worker in busy:
                if worker.conn in ready:
                    try:
                        reply = worker.conn.recv()
                    except (EOFError, OSError):
                        self._replace(worker, "worker_crashed")
                        continue
                    job, worker.job = worker.job, None
                    self.counters["replies"] += 1
                    assert job is not None
                    job.future.set_result(reply)
                    if reply[1] == "memory_limit":  # the worker exits after a MemoryError
                        self._replace(worker, "worker_exited")
                elif time.monotonic() > worker.deadline:
                    self._replace(worker, "timeout")
