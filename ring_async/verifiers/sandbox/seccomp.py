"""Our seccomp policy, written by hand as a classic-BPF program that bubblewrap loads with ``--seccomp FD``.

The filter is a deny list on top of the namespaces: it removes the kernel interfaces a jailed program has no use for
and that are the usual first step of an escape or of snooping on a neighbour (debugging other processes, mounting,
new namespaces, eBPF, perf, the kernel keyring, io_uring, userfaultfd, module and kexec loading, time setting).

Layout of the program (``struct seccomp_data``: nr at offset 0, arch at 4, args[i] at 16 + 8*i)::

    load arch;  arch != native          -> KILL_PROCESS   (no 32-bit or foreign-ABI syscalls)
    load nr;    nr >= X32_BIT (x86-64)   -> ERRNO(EPERM)  (the x32 ABI aliases every syscall)
                nr == clone3             -> ERRNO(ENOSYS) (its flags live in memory BPF cannot read; libc falls back)
                nr == clone: flags & CLONE_NEW*  -> ERRNO(EPERM)
                nr in DENIED             -> ERRNO(EPERM)
    ALLOW

Only x86-64 has a table here (the one we can test); elsewhere the sandbox reports seccomp as unavailable instead of
guessing syscall numbers.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF instruction classes and fields (linux/bpf_common.h).
BPF_LD, BPF_JMP, BPF_RET = 0x00, 0x05, 0x06
BPF_W, BPF_ABS, BPF_K = 0x00, 0x20, 0x00
BPF_JEQ, BPF_JGE, BPF_JSET = 0x10, 0x30, 0x40

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARG0_LOW = 16  # little-endian: the low 32 bits of args[0] come first

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (| NEWTIME, which shares CSIGNAL's bits
# only in clone3 and is not reachable through clone).
CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Syscall numbers from the kernel's x86-64 table (arch/x86/entry/syscalls/syscall_64.tbl).
X86_64_CLONE = 56
X86_64_CLONE3 = 435
X86_64_DENIED: dict[str, int] = {
    # debugging and reading other processes
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "pidfd_getfd": 438,
    "process_madvise": 440,
    # mounts and namespaces
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "open_by_handle_at": 304, "name_to_handle_at": 303,
    # kernel attack surface a program never needs
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249, "fanotify_init": 300,
    "lookup_dcookie": 212, "memfd_secret": 447, "personality": 135, "uselib": 134,
    # the machine itself
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "syslog": 103, "quotactl": 179, "quotactl_fd": 443,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "iopl": 172, "ioperm": 173,
    "vhangup": 153,
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _stmt(code: int, k: int) -> bytes:
    return _insn(code, 0, 0, k)


def _ret_errno(err: int) -> bytes:
    return _stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & 0xFFFF))


def supported() -> bool:
    """Whether this machine's architecture has a syscall table here."""
    return platform.machine() in ("x86_64", "AMD64")


def build_filter() -> bytes:
    """The filter program as bytes (``struct sock_filter[]``), ready to be written to the fd bubblewrap reads."""
    if not supported():
        raise OSError(f"no seccomp syscall table for {platform.machine()}")
    prog = [
        _stmt(BPF_LD | BPF_W | BPF_ABS, OFFSET_ARCH),
        _insn(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, AUDIT_ARCH_X86_64),
        _stmt(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        _stmt(BPF_LD | BPF_W | BPF_ABS, OFFSET_NR),
        _insn(BPF_JMP | BPF_JGE | BPF_K, 0, 1, X32_SYSCALL_BIT),
        _ret_errno(errno.EPERM),
        _insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, X86_64_CLONE3),
        _ret_errno(errno.ENOSYS),
        # clone: inspect the flags, then reload nr for the deny list
        _insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, X86_64_CLONE),
        _stmt(BPF_LD | BPF_W | BPF_ABS, OFFSET_ARG0_LOW),
        _insn(BPF_JMP | BPF_JSET | BPF_K, 0, 1, CLONE_NEW_FLAGS),
        _ret_errno(errno.EPERM),
        _stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    ]
    for nr in sorted(set(X86_64_DENIED.values())):
        prog.append(_insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, nr))
        prog.append(_ret_errno(errno.EPERM))
    prog.append(_stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW))
    return b"".join(prog)


def evaluate(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args: tuple[int, ...] = ()) -> int:
    """Run the filter on one syscall in Python and return the action: lets tests check the policy itself, not only
    its effect through the kernel."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc = 0
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == BPF_LD | BPF_W | BPF_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == BPF_RET | BPF_K:
            return k
        elif code & 0x07 == BPF_JMP:
            op = code & 0xF0
            taken = (acc == k) if op == BPF_JEQ else (acc >= k) if op == BPF_JGE else bool(acc & k)
            pc += 1 + (jt if taken else jf)
        else:
            raise ValueError(f"unexpected instruction {code:#x}")
