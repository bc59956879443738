"""The code sandbox against adversarial programs: each case gets the right verdict, nothing it started survives, the
host is unharmed, and the next program is judged normally. Plus the ordinary verdicts, C++, the seccomp policy
itself, and the sandbox_error path (retried once, then masked)."""

import dataclasses
import json
import os
import random
import socket
import subprocess
from pathlib import Path

import pytest

from ring_async.verifiers import verdicts as V
from ring_async.verifiers.errors import VerifierError
from ring_async.verifiers.sandbox import CodeJudge, cgroups, probe, seccomp
from ring_async.verifiers.sandbox.cgroups import CgroupPool
from ring_async.verifiers.sandbox.compare import compare_stdout, equal_values
from ring_async.verifiers.sandbox.harness import Unserialisable, compile_program, imported_modules, to_json
from ring_async.verifiers.sandbox.jail import Jail, filter_program
from ring_async.verifiers.sandbox.policy import SandboxPolicy
from ring_async.verifiers.tests_format import parse_tests

SECRET = f"ring-async-secret-{random.randrange(10**12)}"
os.environ["RING_ASYNC_TEST_SECRET"] = SECRET  # in the host environment for the whole module (bwrap starts here)
ADD = parse_tests({"mode": "stdio", "time_limit_s": 1,
                   "cases": [{"input": f"{i} {i * 3}\n", "output": f"{i * 4}\n"} for i in range(10)]})
ADD_SOURCE = "a, b = map(int, input().split())\nprint(a + b)\n"


def one_case(output, input_="", time_limit_s=0.5, **extra):
    return parse_tests({"mode": "stdio", "time_limit_s": time_limit_s,
                        "cases": [{"input": input_, "output": output}], **extra})


def marker():
    return str(random.randrange(10**8, 10**9))


def processes_with(text):
    """Host pids whose command line contains ``text``."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def judge():
    with CodeJudge(pool_size=3) as j:
        j.warm_up()
        yield j
    assert j.teardown_failures == 0


@pytest.fixture(scope="module")
def canary():
    """A host process and a host file that no program may touch."""
    proc = subprocess.Popen(["sleep", "600"])
    path = Path("/tmp") / f"ring-async-canary-{marker()}"
    path.write_text(SECRET)
    yield proc, path
    assert proc.poll() is None, "a jailed program killed a host process"
    assert path.read_text() == SECRET
    proc.kill()
    proc.wait()
    path.unlink()


def judged(judge, source, tests, lang="python"):
    result = judge.judge(source, tests, lang)
    # The next program is judged normally after every adversarial one.
    assert judge.judge(ADD_SOURCE, ADD).verdict == V.ACCEPTED
    judge.wait_for_teardowns()
    assert judge.teardown_failures == 0
    return result


def test_the_machine_has_a_working_sandbox():
    host = probe()
    assert host.ok, host.reason  # bubblewrap is a required Debian package (scripts/ensure-debs.sh)
    protections = host.protections()
    assert protections["namespaces"] == ["user", "pid", "mount", "network", "ipc", "uts", "cgroup"]
    assert protections["no_new_privs"] is True


# -- ordinary verdicts -------------------------------------------------------------------------------------------------


def test_accepted_and_details(judge):
    result = judge.judge(ADD_SOURCE, ADD)
    assert result.verdict == V.ACCEPTED and result.reward == 1.0
    assert result.details["tests_passed"] == 10 and result.details["attempts"] == 1
    assert set(result.details["protections"]) >= {"namespaces", "seccomp", "cgroups", "rlimits", "host_uid"}


def test_wrong_answer_stops_at_the_first_failing_case(judge):
    result = judge.judge("a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n", ADD)
    assert result.verdict == V.WRONG_ANSWER and result.reward == 0.0
    assert result.details["failed_case"] == 5 and result.details["tests_passed"] == 5


@pytest.mark.parametrize("source,verdict", [
    ("def broken(:\n", V.COMPILE_ERROR),
    ("raise ValueError('no')\n", V.RUNTIME_ERROR),
    ("import sys\nsys.exit(3)\n", V.RUNTIME_ERROR),
    ("import sys\nsys.exit(0)\n", V.WRONG_ANSWER),  # a clean exit is fine; the missing output is not
    ("print(input())\ninput()\n", V.RUNTIME_ERROR),  # reads past the end of its input: EOFError
    ("import os\nos.kill(os.getpid(), 11)\n", V.RUNTIME_ERROR),
    ("def f(n):\n    return f(n + 1)\nf(0)\n", V.RUNTIME_ERROR),
])
def test_ordinary_failures(judge, source, verdict):
    result = judge.judge(source, one_case("1", "1\n"))
    assert result.verdict == verdict, result.details


def test_time_is_judged_on_cpu_with_a_wall_clock_cap(judge):
    # Sleeping uses no CPU: within the wall cap (2 x 0.3 + 0.5 s) it is accepted; past the cap it is a time limit.
    tests = one_case("ok", time_limit_s=0.3)
    assert judge.judge("import time\ntime.sleep(0.4)\nprint('ok')\n", tests).verdict == V.ACCEPTED
    result = judge.judge("import time\ntime.sleep(30)\nprint('ok')\n", tests)
    assert result.verdict == V.TIME_LIMIT and result.details["reason"] == "wall_time"


def test_function_mode(judge):
    tests = parse_tests({"mode": "function", "entry": "f", "cases": [
        {"args": [[3, 1, 2]], "expected": [1, 2, 3]}, {"args": [[]], "expected": []},
        {"args": [[2.5, 1]], "expected": [1, 2.5]}]})
    source = "from typing import List\ndef f(xs: List[float]) -> List[float]:\n    return sorted(xs)\n"
    assert judge.judge(source, tests).verdict == V.ACCEPTED
    tuples = "def f(xs):\n    return tuple(sorted(xs))\n"  # JSON has no tuples: a tuple is a list
    assert judge.judge(tuples, tests).verdict == V.ACCEPTED
    method = parse_tests({"mode": "function", "entry": "Solution.add", "cases": [{"args": [1, 2], "expected": 3}]})
    assert judge.judge("class Solution:\n    def add(self, a, b):\n        return a + b\n", method).verdict \
        == V.ACCEPTED
    assert judge.judge("def g(xs):\n    return xs\n", tests).verdict == V.RUNTIME_ERROR  # no entry point


def test_float_tolerance(judge):
    tests = one_case("0.333333", float_tolerance=1e-4)
    assert judge.judge("print(1/3)\n", tests).verdict == V.ACCEPTED
    assert judge.judge("print(0.3)\n", tests).verdict == V.WRONG_ANSWER


# -- resource bombs ----------------------------------------------------------------------------------------------------


def test_fork_bomb(judge, canary):
    tag = marker()
    source = (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        f"            os.execv('/usr/bin/sleep', ['sleep', '{tag}'])\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = judged(judge, source, one_case("1"))
    assert result.verdict == V.TIME_LIMIT, result.details
    assert processes_with(tag) == []


def test_thread_bomb(judge, canary):
    source = "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(600,)).start()\n"
    result = judged(judge, source, one_case("1"))
    assert result.verdict == V.RUNTIME_ERROR, result.details
    assert "can't start new thread" in result.details["message"]


def test_memory_bomb(judge, canary):
    # (zeroing 256 MiB costs this VM ~0.35 s of CPU: the time limit leaves room for the memory limit to hit first)
    result = judged(judge, "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n",
                    one_case("1", time_limit_s=3))
    assert result.verdict == V.MEMORY_LIMIT, result.details


def test_programs_run_with_the_garbage_collector_on(judge):
    # ~1.6 M reference cycles of ~100 bytes: far past 64 MB if nothing collects them, a few KB if the collector runs.
    source = "for i in range(1_600_000):\n    a = []\n    a.append(a)\nimport gc\nprint(int(gc.isenabled()))\n"
    result = judged(judge, source, one_case("1", time_limit_s=5, memory_limit_mb=64))
    assert result.verdict == V.ACCEPTED, result.details


def test_memory_bomb_in_many_processes_is_stopped(judge, canary):
    # Each child stays under its own address-space limit; together they would exceed the jail's.
    tag = marker()
    source = (
        "import os, time\n"
        "for _ in range(6):\n"
        "    if os.fork() == 0:\n"
        "        try:\n"
        "            block = bytearray(200 * 2 ** 20)\n"
        "            block[::4096] = b'x' * len(block[::4096])\n"
        "        except MemoryError:\n"
        "            pass\n"
        f"        os.execv('/usr/bin/sleep', ['sleep', '{tag}'])\n"
        "time.sleep(600)\n"
    )
    result = judged(judge, source, one_case("1", time_limit_s=1))
    assert result.verdict in (V.TIME_LIMIT, V.MEMORY_LIMIT), result.details
    assert processes_with(tag) == []


def test_disk_bombs(judge, canary):
    tag = marker()
    one_big_file = f"with open('/tmp/big-{tag}', 'wb') as f:\n    while True:\n        f.write(b'x' * 2 ** 20)\n"
    result = judged(judge, one_big_file, one_case("1"))
    assert result.verdict == V.OUTPUT_LIMIT, result.details  # RLIMIT_FSIZE
    many_files = (
        "i = 0\nwhile True:\n"
        f"    with open(f'/tmp/part-{tag}-{{i}}', 'wb') as f:\n"
        "        f.write(b'x' * (8 * 2 ** 20))\n"
        "    i += 1\n"
    )
    result = judged(judge, many_files, one_case("1"))
    assert result.verdict == V.RUNTIME_ERROR and result.details["error"] == "OSError", result.details  # tmpfs full
    assert not list(Path("/tmp").glob(f"*{tag}*"))  # nothing reached the host's /tmp


def test_output_bombs(judge, canary):
    assert judged(judge, "while True:\n    print('x' * 1000)\n", one_case("1")).verdict == V.OUTPUT_LIMIT
    stderr_bomb = "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)\n"
    assert judged(judge, stderr_bomb, one_case("1")).verdict == V.OUTPUT_LIMIT
    function = parse_tests({"mode": "function", "entry": "f", "cases": [{"args": [], "expected": 1}]})
    assert judged(judge, "def f():\n    return 'z' * (8 * 2 ** 20)\n", function).verdict == V.OUTPUT_LIMIT


# -- hangs -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "while True:\n    pass\n",
    "import sys\nwhile True:\n    sys.stdin.read()\n",  # reading stdin forever (it is at EOF)
    "import os\nwhile True:\n    os.read(0, 1)\n",
    "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "while True:\n    pass\n",
])
def test_loops_and_stubborn_programs_hit_the_time_limit(judge, canary, source):
    assert judged(judge, source, one_case("1")).verdict == V.TIME_LIMIT


def test_sleepers_that_ignore_sigterm_do_not_survive(judge, canary):
    tag = marker()
    source = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n"
        f"    os.execv('/usr/bin/sleep', ['sleep', '{tag}'])\n"
        "time.sleep(600)\n"
    )
    assert judged(judge, source, one_case("1")).verdict == V.TIME_LIMIT
    assert processes_with(tag) == []


# -- escape attempts ---------------------------------------------------------------------------------------------------


def test_setsid_double_fork_daemon_is_killed(judge, canary):
    tag = marker()
    source = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/usr/bin/sleep', ['sleep', '{tag}'])\n"
        "    os._exit(0)\n"
        "print(1)\n"
    )
    result = judged(judge, source, one_case("1"))
    assert result.verdict == V.ACCEPTED  # the answer is right; the daemon it left behind is gone
    assert processes_with(tag) == []


def test_kill_everything_reaches_only_the_jail(judge, canary):
    source = (
        "import os, signal\n"
        "for sig in (signal.SIGKILL, signal.SIGSTOP):\n"
        "    os.kill(1, sig)  # the harness is the jail's init: ignored\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)\n"
        "except ProcessLookupError:\n"
        "    pass\n"
        "print(1)\n"
    )
    result = judged(judge, source, one_case("1"))
    assert result.verdict == V.ACCEPTED, result.details  # harness intact; nothing outside the jail was reachable
    assert canary[0].poll() is None


def test_kernel_interfaces_are_closed(judge):
    source = r'''
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
report = []
report.append(call(101, 0, 0, 0, 0))              # ptrace(PTRACE_TRACEME)
report.append(call(272, 0x10000000))               # unshare(CLONE_NEWUSER)
report.append(call(272, 0x00020000))               # unshare(CLONE_NEWNS)
report.append(call(165, 0, 0, 0, 0, 0))            # mount
report.append(call(321, 0, 0, 0))                  # bpf
report.append(call(425, 1, 0))                     # io_uring_setup
report.append(call(250, 0, 0))                     # keyctl
report.append(call(298, 0, 0, 0, 0, 0))            # perf_event_open
report.append(call(56, 0x10000000 | 17, 0, 0, 0, 0))  # clone(CLONE_NEWUSER | SIGCHLD)
report.append(call(435, 0, 0))                     # clone3
report.append(call(0x40000000 + 39))               # x32 getpid
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
report.append(status["Seccomp"].strip() + status["NoNewPrivs"].strip())
for path in ("/proc/1/mem", "/proc/1/fd/0", "/proc/1/fd/1", "/proc/1/environ"):
    try:
        open(path, "rb").read(1)
        report.append("open")
    except OSError:
        report.append("blocked")
for path in ("/usr/evil", "/etc/evil", "/evil", "/proc/sys/kernel/hostname"):
    try:
        open(path, "w").write("x")
        report.append("written")
    except OSError:
        report.append("ro")
print(" ".join(report))
'''
    expected = ("EPERM EPERM EPERM EPERM EPERM EPERM EPERM EPERM EPERM ENOSYS EPERM 21 "
                "blocked blocked blocked blocked ro ro ro ro")
    result = judge.judge(source, one_case(expected, time_limit_s=2))
    assert result.verdict == V.ACCEPTED, result.details


def test_network_is_loopback_only(judge, canary):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    source = f'''
import socket
report = []
for address in (("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)):
    try:
        socket.create_connection(address, timeout=0.5).close()
        report.append("connected")
    except OSError:
        report.append("blocked")
try:
    socket.getaddrinfo("example.com", 80)
    report.append("resolved")
except OSError:
    report.append("no-dns")
interfaces = sorted(name for _, name in socket.if_nameindex())
report.append(",".join(interfaces))
print(" ".join(report))
'''
    result = judged(judge, source, one_case("blocked blocked blocked no-dns lo", time_limit_s=2))
    assert result.verdict == V.ACCEPTED, result.details
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing reached the host's loopback port
    listener.close()


def test_only_tmp_and_dev_shm_are_writable(judge, canary):
    # /dev is a handful of device nodes on the read-only root (no tmpfs of its own, no pseudo-terminals); /tmp and
    # /dev/shm are the only writable places, and both are size-capped.
    source = r'''
import errno, os
report = []
for directory in ("/", "/dev", "/usr", "/etc", "/tmp", "/dev/shm"):
    try:
        with open(os.path.join(directory, "probe-file"), "w") as f:
            f.write("x")
        report.append("w")
    except OSError:
        report.append("ro")
with open("/dev/null", "w") as f:
    f.write("discarded")
with open("/dev/zero", "rb") as f, open("/dev/urandom", "rb") as g:
    report.append(str(len(f.read(8)) + len(g.read(8))))
report.append(",".join(sorted(os.listdir("/dev"))))
for directory in ("/tmp", "/dev/shm"):
    chunk, outcome = b"x" * (1 << 20), "uncapped"
    try:
        for i in range(6):  # 6 files x 15 MiB: over the 64 MiB cap, each under RLIMIT_FSIZE
            with open(os.path.join(directory, "fill-%d" % i), "wb") as f:
                for _ in range(15):
                    f.write(chunk)
    except OSError as err:
        outcome = errno.errorcode[err.errno]
    for i in range(6):
        try:
            os.unlink(os.path.join(directory, "fill-%d" % i))
        except OSError:
            pass
    report.append(outcome)
print(" ".join(report))
'''
    expected = "ro ro ro ro w w 16 fd,full,null,random,shm,stderr,stdin,stdout,urandom,zero ENOSPC ENOSPC"
    result = judged(judge, source, one_case(expected, time_limit_s=4))
    assert result.verdict == V.ACCEPTED, result.details


def test_case_stdio_is_fresh_in_every_case(judge):
    # One runner serves many cases; each must still get its streams as if built in its own process: stdin seekable
    # at its start, holding only this case's input (also through fd 0).
    source = "import sys\nprint(sys.stdin.seekable(), sys.stdout.seekable(), sys.stderr.seekable(), " \
             "sys.stdin.tell(), sys.stdin.read().split())\nsys.stdin.seek(0)\nprint(sys.stdin.read().split())\n"
    tests = parse_tests({"mode": "stdio", "cases": [
        {"input": "a b\n", "output": "True False False 0 ['a', 'b'] ['a', 'b']"},
        {"input": "c\n", "output": "True False False 0 ['c'] ['c']"}]})
    result = judge.judge(source, tests)
    assert result.verdict == V.ACCEPTED, result.details
    # What one case does to its streams (closing, replacing, half-reading) is gone in the next.
    source = "import sys\nprint(sys.stdin.readline().strip(), sys.stdin.closed, sys.stderr.closed)\n" \
             "sys.stdin.close()\nsys.stderr.close()\nsys.stdout.write('x')\n"
    tests = parse_tests({"mode": "stdio", "cases": [
        {"input": f"line{i}\nrest\n", "output": f"line{i} False False\nx"} for i in range(3)]})
    result = judge.judge(source, tests)
    assert result.verdict == V.ACCEPTED, result.details
    source = "import os\nprint(os.read(0, 100).decode().strip(), open(0).read().strip())\n"
    tests = parse_tests({"mode": "stdio", "cases": [{"input": f"n{i}", "output": f"n{i}"} for i in range(3)]})
    assert judge.judge(source, tests).verdict == V.ACCEPTED


def test_one_runner_serves_the_cases_of_a_program(judge):
    # The jail's pid 1 is the harness and the first process it forks is pid 2: every case ran in that one runner.
    tests = parse_tests({"mode": "stdio", "cases": [{"input": "", "output": "2"} for _ in range(5)]})
    result = judge.judge("import os\nprint(os.getpid())\n", tests)
    assert result.verdict == V.ACCEPTED, result.details


def test_processes_a_case_started_are_gone_before_the_next_case(judge):
    source = "import os, subprocess\n" \
             "others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]\n" \
             "print(len(others))\nsubprocess.Popen(['sleep', '600'])\n"
    tests = parse_tests({"mode": "stdio", "cases": [{"input": "", "output": "0"} for _ in range(4)]})
    result = judge.judge(source, tests)
    assert result.verdict == V.ACCEPTED, result.details


def test_state_left_by_earlier_cases_never_fails_a_case(judge):
    # A program that fails only where an earlier run left something behind (here a flag on a module; the same goes
    # for memory kept in one) is judged as separate processes would judge it: the failing case runs again in a
    # fresh runner, whose verdict stands.
    source = "import sys\nif getattr(sys, 'seen', False):\n    raise RuntimeError('not a fresh process')\n" \
             "sys.seen = True\nprint(input())\n"
    tests = parse_tests({"mode": "stdio", "cases": [{"input": f"{i}\n", "output": f"{i}"} for i in range(4)]})
    assert judge.judge(source, tests).verdict == V.ACCEPTED
    # A failure of the program itself still fails, in the case where it happens.
    source = "n = int(input())\nassert n != 2\nprint(n)\n"
    result = judge.judge(source, tests)
    assert result.verdict == V.RUNTIME_ERROR and result.details["failed_case"] == 2, result.details


def test_threads_end_with_the_run(judge):
    # The usual deep-recursion idiom: all the work in a non-daemon thread, which the run waits for.
    source = "import sys, threading\ndef main():\n    def depth(n):\n" \
             "        return 0 if n == 0 else 1 + depth(n - 1)\n    print(depth(int(input())))\n" \
             "sys.setrecursionlimit(100000)\nthreading.stack_size(1 << 26)\nthreading.Thread(target=main).start()\n"
    tests = parse_tests({"mode": "stdio", "time_limit_s": 2,
                         "cases": [{"input": f"{n}\n", "output": f"{n}"} for n in (10, 20000, 30000)]})
    result = judge.judge(source, tests)
    assert result.verdict == V.ACCEPTED, result.details
    # A daemon thread still running after the run dies with it: it never writes into the next case.
    source = "import threading, time\ndef late():\n    time.sleep(0.05)\n    print('LEAK', flush=True)\n" \
             "threading.Thread(target=late, daemon=True).start()\nprint(input())\ntime.sleep(0.01)\n"
    tests = parse_tests({"mode": "stdio", "cases": [{"input": f"{i}\n", "output": f"{i}"} for i in range(3)]})
    result = judge.judge(source, tests)
    assert result.verdict == V.ACCEPTED, result.details


def test_cpu_time_is_judged_per_case_in_a_runner(judge):
    # Six cases of ~0.6 s CPU each under a 1 s limit: 3.6 s in one runner, over a per-process backstop of
    # limit + 2 s, and still every case is within its own limit.
    burn = "import time\nlimit = float(input())\nstart = time.process_time()\n" \
           "while time.process_time() - start < limit:\n    pass\nprint('ok')\n"
    tests = parse_tests({"mode": "stdio", "time_limit_s": 1, "cases": [{"input": "0.6\n", "output": "ok"}] * 6})
    result = judge.judge(burn, tests)
    assert result.verdict == V.ACCEPTED, result.details
    assert all(0.5 <= case["cpu_s"] <= 1.0 for case in result.details["cases"]), result.details["cases"]
    # One slow case among fast ones is the one over the limit.
    tests = parse_tests({"mode": "stdio", "time_limit_s": 1, "cases": [
        {"input": "0.01\n", "output": "ok"}, {"input": "0.01\n", "output": "ok"}, {"input": "1.5\n", "output": "ok"}]})
    result = judge.judge(burn, tests)
    assert result.verdict == V.TIME_LIMIT and result.details["failed_case"] == 2, result.details


def test_secrets_and_host_files_are_invisible(judge, canary):
    _, host_file = canary
    source = f'''
import os
SECRET = {SECRET!r}
seen = []
seen.append(repr(dict(os.environ)))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("environ", "cmdline"):
            try:
                seen.append(open(f"/proc/{{pid}}/{{name}}", "rb").read().decode("latin-1"))
            except OSError:
                pass
readable = []
for path in ({str(host_file)!r}, "/etc/passwd", "/etc/shadow", "/root", "/home", "/work", {os.getcwd()!r},
             "/var", "/run", "/sys/fs/cgroup"):
    if os.path.exists(path):
        readable.append(path)
print("FOUND" if any(SECRET in text for text in seen) else "CLEAN", readable)
print(sorted(os.environ))
'''
    result = judged(judge, source, one_case("CLEAN [] ['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']", time_limit_s=2))
    assert result.verdict == V.ACCEPTED, result.details


def test_files_do_not_carry_over_to_the_next_program(judge, canary):
    tag = marker()
    writer = (
        "import os\n"
        f"for path in ('/tmp/left-{tag}', '/dev/shm/left-{tag}', os.path.expanduser('~/left-{tag}')):\n"
        "    open(path, 'w').write('hello')\n"
        "print('written')\n"
    )
    assert judge.judge(writer, one_case("written")).verdict == V.ACCEPTED
    reader = (
        "import os\n"
        f"paths = ('/tmp/left-{tag}', '/dev/shm/left-{tag}', os.path.expanduser('~/left-{tag}'))\n"
        "print('CLEAN' if not any(os.path.exists(p) for p in paths) else 'LEFT')\n"
    )
    assert judge.judge(reader, one_case("CLEAN")).verdict == V.ACCEPTED
    assert not list(Path("/tmp").glob(f"*{tag}*")) and not list(Path("/dev/shm").glob(f"*{tag}*"))


# -- reward hacks ------------------------------------------------------------------------------------------------------

FUNCTION = parse_tests({"mode": "function", "entry": "f",
                        "cases": [{"args": [[1, 2, 3]], "expected": 6}, {"args": [[5]], "expected": 5}]})


@pytest.mark.parametrize("source,verdict", [
    # exit before the tests run
    ("import sys\nsys.exit(0)\ndef f(xs):\n    return sum(xs)\n", V.RUNTIME_ERROR),
    ("import os\nos._exit(0)\ndef f(xs):\n    return sum(xs)\n", V.RUNTIME_ERROR),
    ("def f(xs):\n    import os\n    os._exit(0)\n", V.RUNTIME_ERROR),
    # an always-true __eq__, on its own class and on an int subclass
    ("class Any:\n    def __eq__(self, other):\n        return True\ndef f(xs):\n    return Any()\n", V.WRONG_ANSWER),
    ("class Liar(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
     "    def __repr__(self):\n        return '6'\ndef f(xs):\n    return Liar(0)\n", V.WRONG_ANSWER),
    # patching the harness: replace its serialiser, then write a forged report of our own
    ("import gc\nfor d in gc.get_objects():\n    if isinstance(d, dict) and 'to_json' in d and '_report' in d:\n"
     "        d['to_json'] = lambda value, depth=0: '6'\ndef f(xs):\n    return None\n", V.WRONG_ANSWER),
    # a report of our own on the runner's report channel: unframed it is noise (no result), framed it is taken as
    # the program's answer to the case it was written in (right for the first case, 6), and a fresh runner
    # takes the next case after the program exits: that one is judged as wrong (5 expected)
    ("import os\nos.write(3, b'result=6')\nos._exit(0)\n", V.RUNTIME_ERROR),
    ("import os\nos.write(3, len(b'result=6').to_bytes(4, 'big') + b'result=6')\nos._exit(0)\n", V.WRONG_ANSWER),
    # frame inspection and a heap search for the expected values
    ("import sys, gc\ndef f(xs):\n    found = []\n    frame = sys._getframe()\n    while frame:\n"
     "        found += [v for k, v in frame.f_locals.items() if k in ('expected', 'output', 'cases')]\n"
     "        frame = frame.f_back\n"
     "    found += [o.get('expected') for o in gc.get_objects() if isinstance(o, dict) and 'expected' in o]\n"
     "    return found[0] if found else None\n", V.WRONG_ANSWER),
])
def test_reward_hacks_do_not_pay(judge, source, verdict):
    result = judged(judge, source, FUNCTION)
    assert result.verdict == verdict, result.details
    assert result.reward == 0.0


def test_forged_report_with_the_right_value_only_passes_like_returning_it(judge):
    # Writing a framed "result=6" by hand is no stronger than returning 6: it passes case 0 and fails case 1.
    source = "import os\nos.write(3, len(b'result=6').to_bytes(4, 'big') + b'result=6')\nos._exit(0)\n"
    result = judge.judge(source, FUNCTION)
    assert result.verdict == V.WRONG_ANSWER and result.details["failed_case"] == 1


# -- C++ ---------------------------------------------------------------------------------------------------------------

CPP_ADD = '#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << "\\n"; }\n'


def test_cpp(judge, canary):
    assert judge.judge(CPP_ADD, ADD, "cpp").verdict == V.ACCEPTED
    broken = judge.judge("int main() { return }\n", ADD, "cpp")
    assert broken.verdict == V.COMPILE_ERROR and "error" in broken.details["compiler_output"]
    bomb = "#include <vector>\nint main() { std::vector<char*> v; while (true) v.push_back(new char[1 << 24]); }\n"
    assert judged(judge, bomb, one_case("1"), "cpp").verdict == V.MEMORY_LIMIT
    loop = "int main() { volatile unsigned long i = 0; while (true) ++i; }\n"
    assert judged(judge, loop, one_case("1"), "cpp").verdict == V.TIME_LIMIT
    with pytest.raises(VerifierError):
        judge.judge(CPP_ADD, FUNCTION, "cpp")


# -- the sandbox's own failures ----------------------------------------------------------------------------------------


def test_a_jail_that_cannot_start_is_a_masked_sandbox_error():
    broken = dataclasses.replace(probe(), bwrap="/usr/bin/false")
    with CodeJudge(host=broken, policy=SandboxPolicy(jail_start_timeout_s=2), pool_size=1) as judge:
        result = judge.judge(ADD_SOURCE, ADD)
    assert result.verdict == V.SANDBOX_ERROR and result.reward is None
    assert result.details["attempts"] == 2  # retried once on a fresh jail


def test_no_sandbox_means_no_run():
    missing = dataclasses.replace(probe(), ok=False, reason="bubblewrap (bwrap) is not installed")
    with CodeJudge(host=missing) as judge:
        result = judge.judge(ADD_SOURCE, ADD)
    assert result.verdict == V.SANDBOX_ERROR and result.reward is None
    assert "bubblewrap" in result.details["reason"]


def test_jail_teardown_leaves_no_process_and_no_cgroup():
    host = probe()
    jail = Jail(host, SandboxPolicy(), filter_program(host))
    jail.wait_ready(10)
    jail.attach_cgroup()
    members = jail.cgroup.members() if jail.cgroup else []
    pids = [jail.proc.pid]
    facts = jail.destroy()
    assert facts.get("bwrap_survived_kill") is None
    for pid in pids + members:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    if jail.cgroup is not None:
        assert members  # the tree was in the cgroup
        assert not any(path.exists() for path in jail.cgroup.dirs.values())


def test_memory_limit_verdicts_on_reused_cgroups():
    """Jail cgroups are reused: the kernel's OOM count of a cgroup cannot be reset, so an OOM kill in one program must
    not turn a later program's SIGKILL into memory_limit."""
    if not probe().cgroups.bases or "memory" not in probe().cgroups.bases:
        pytest.skip("no memory cgroup on this machine")
    oom = (
        "import os, time\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        block = bytearray(70 * 2 ** 20)\n"
        "        time.sleep(600)\n"
        "time.sleep(0.5)\n"
        "block = bytearray(240 * 2 ** 20)  # together over the jail's cgroup limit; this process is the largest\n"
        "time.sleep(600)\n"
    )
    killed = "import os\nos.kill(os.getpid(), 9)\n"
    with CodeJudge(pool_size=1) as judge:
        # (a generous time limit: on a loaded machine the 1-core cgroup quota makes zeroing 500 MB take seconds)
        result = judge.judge(oom, one_case("1", time_limit_s=6))
        assert result.verdict == V.MEMORY_LIMIT, result.details
        for _ in range(5):  # the released cgroups are reused first in, first out: the OOM'd one comes round
            result = judge.judge(killed, one_case("1"))
            assert result.verdict == V.RUNTIME_ERROR and result.details["signal"] == 9, result.details
        judge.wait_for_teardowns()
        stats = judge.pool_stats()
        assert stats["cgroups"]["reused"] >= 3 and stats["cgroups"]["discarded"] == 0, stats
        assert stats["teardown_failures"] == 0


def test_cgroup_pool_reuses_only_emptied_cgroups(monkeypatch):
    support = probe().cgroups
    if "memory" not in support.bases:
        pytest.skip("no memory cgroup on this machine")
    pool = CgroupPool(support, f"jail-test-{marker()}")
    try:
        first = pool.acquire()
        first.set_limits(8, 32 << 20, 1.0)
        # A host process OOM-killed in it: the count is the jail's; the reused cgroup starts from zero.
        proc = subprocess.Popen(["python3", "-c", "import sys; sys.stdin.read(1); b = bytearray(200 << 20)"],
                                stdin=subprocess.PIPE)
        first.attach([proc.pid])
        proc.stdin.write(b"x")
        proc.stdin.close()
        assert proc.wait(30) == -9
        assert first.oom_kills() == 1
        pool.release(first, first.kill_all())
        again = pool.acquire()
        assert again is first and again.oom_kills() == 0 and pool.stats()["reused"] == 1
        # Not emptied, or too much memory left charged to it: removed, never handed out again.
        pool.release(again, False)
        assert not any(path.exists() for path in first.dirs.values())
        other = pool.acquire()
        assert other is not first
        monkeypatch.setattr(cgroups, "REUSE_MAX_CHARGE_BYTES", -1)
        pool.release(other, other.kill_all())
        assert not any(path.exists() for path in other.dirs.values())
        assert pool.stats()["discarded"] == 2
    finally:
        pool.close()


# -- the pieces --------------------------------------------------------------------------------------------------------


def test_seccomp_filter_decisions():
    if not seccomp.supported():
        pytest.fail("these tests run on x86-64, the architecture the filter covers")
    program = seccomp.build_filter()
    errno_eperm = seccomp.SECCOMP_RET_ERRNO | 1
    for name, nr in seccomp.X86_64_DENIED.items():
        assert seccomp.evaluate(program, nr) == errno_eperm, name
    for allowed in (0, 1, 2, 39, 57, 59, 60, 231, 434, 319):  # read write open getpid fork execve exit ...
        assert seccomp.evaluate(program, allowed) == seccomp.SECCOMP_RET_ALLOW
    assert seccomp.evaluate(program, 56, args=(17,)) == seccomp.SECCOMP_RET_ALLOW  # clone(SIGCHLD)
    assert seccomp.evaluate(program, 56, args=(0x10000000 | 17,)) == errno_eperm  # clone(CLONE_NEWUSER)
    assert seccomp.evaluate(program, 435) == seccomp.SECCOMP_RET_ERRNO | 38  # clone3: ENOSYS
    assert seccomp.evaluate(program, 0x40000000 + 39) == errno_eperm  # x32
    assert seccomp.evaluate(program, 20, arch=0x40000003) == seccomp.SECCOMP_RET_KILL_PROCESS  # i386


def test_harness_json_never_trusts_the_value():
    class Liar(int):
        def __repr__(self):
            return "999"

    class Text(str):
        def __str__(self):
            return "lie"

    assert to_json([Liar(5), Text("ok"), (1, 2.5), {"k": None, "b": True}]) == \
        '[5,"ok",[1,2.5],{"k":null,"b":true}]'
    assert to_json("é\n\"\U0001F600") == '"\\u00e9\\n\\"\\ud83d\\ude00"'
    for bad in ({1, 2}, object(), {1: 2}):
        with pytest.raises(Unserialisable):
            to_json(bad)
    # The escaping (an ASCII fast path and a per-character loop) is JSON's own, character for character.
    rng = random.Random(7)
    alphabet = [chr(code) for code in range(0x100)] + ["\u2028", "\ud800", "\uffff", "\U0001F600"]
    for n in range(2000):
        text = "".join(rng.choice(alphabet[:0x80] if n % 2 else alphabet) for _ in range(rng.randint(0, 40)))
        assert to_json(text) == json.dumps(text)


def test_programs_compile_as_with_compile():
    # The harness compiles through the C API (no ast classes created); it must be compile() exactly.
    def same(a, b):
        return a == b and a.co_filename == b.co_filename and a.co_flags == b.co_flags and all(
            same(x, y) if isinstance(x, type(a)) else x == y for x, y in zip(a.co_consts, b.co_consts))

    def outcome(fn):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - comparing which exception each raises
            return type(err).__name__, str(err)

    sources = [
        "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n",
        "from __future__ import annotations\ndef f(x: Foo) -> Bar:\n    return x\n",
        "# -*- coding: latin-1 -*-\nprint('\u00e9')\n",  # str source: the cookie is ignored
        "class A:\n    def m(self):\n        return [i * i for i in range(10)]\nasync def g():\n    await h()\n",
        "match x:\n    case [1, *rest]:\n        pass\n",
        "def broken(:\n", "x = \0\n", "print('\ud800')\n", "(" * 300 + ")" * 300, "return 5\n", "  x = 1\n",
    ]
    for source in sources:
        ours = outcome(lambda: compile_program(source))
        builtin = outcome(lambda: compile(source, "solution.py", "exec", dont_inherit=True))
        if isinstance(builtin, tuple):
            assert ours == builtin, source
        else:
            assert same(ours, builtin), source


def test_imports_are_found_by_text():
    assert imported_modules("import os, sys as s\nfrom collections import deque\n  from a.b import c\nx = 1\n") == \
        {"os", "sys", "collections", "a"}


def test_comparisons():
    assert compare_stdout(b"1 2\n3\n", "1\n2 3") == (True, "")
    assert compare_stdout(b"1 2", "1 2 3")[0] is False
    assert compare_stdout(b"0.3333", "0.33333", 1e-3)[0] is True
    assert compare_stdout(b"nan", "nan", 1e-3)[0] is True  # equal tokens
    assert compare_stdout(b"abc", "abd", 1.0)[0] is False
    assert equal_values(2, 2.0) and not equal_values(True, 1) and not equal_values(1, True)
    assert not equal_values(float("nan"), float("nan"))
    assert equal_values({"a": [1, "x"]}, {"a": [1, "x"]}) and not equal_values({"a": 1}, {"a": 1, "b": 2})
    assert equal_values(0.1 + 0.2, 0.3, 1e-9) and not equal_values(0.1 + 0.2, 0.3)
