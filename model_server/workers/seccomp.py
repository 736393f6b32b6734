"""A seccomp-bpf filter for a model's worker, written out as BPF (no libseccomp needed).

What it refuses (EPERM; the call does not happen): new sockets and socket pairs, connect,
bind, listen and accept (the worker keeps only the descriptors it was given: its channel
to the server); execve and execveat; new processes (clone without CLONE_THREAD, fork,
vfork; clone3, whose flags a filter cannot read, answers ENOSYS so glibc falls back to
clone for threads); ptrace and reading or writing other processes' memory; mount,
namespaces, chroot, pivot_root; kernel modules, kexec, reboot, swap; bpf,
perf_event_open, userfaultfd, io_uring (whose operations would pass around the filter);
the kernel keyring; opening files by handle. A foreign architecture or the x32 ABI is
killed. Everything else (threads, memory, files under Landlock's rules) is allowed.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from model_server.errors import ConfinementError

# the BPF instructions used
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_DENY = _ERRNO | errno.EPERM

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000

# seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64 each)
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

_DENIED_NAMES = (
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv",
    "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "move_mount", "open_tree", "mount_setattr",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key",
    "request_key", "name_to_handle_at", "open_by_handle_at", "pidfd_getfd",
)  # fmt: skip

_TABLES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,  # AUDIT_ARCH_X86_64
        {
            "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50,
            "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "execve": 59,
            "ptrace": 101, "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166,
            "swapon": 167, "swapoff": 168, "reboot": 169, "init_module": 175,
            "delete_module": 176, "kexec_load": 246, "add_key": 248, "request_key": 249,
            "keyctl": 250, "unshare": 272, "accept4": 288, "perf_event_open": 298,
            "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
            "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
            "kexec_file_load": 320, "bpf": 321, "execveat": 322, "userfaultfd": 323,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
            "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
            "fsmount": 432, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
        },
    ),
    "aarch64": (
        0xC00000B7,  # AUDIT_ARCH_AARCH64 (the generic table: no fork or vfork calls)
        {
            "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "unshare": 97,
            "kexec_load": 104, "init_module": 105, "delete_module": 106, "ptrace": 117,
            "reboot": 142, "socket": 198, "socketpair": 199, "bind": 200, "listen": 201,
            "accept": 202, "connect": 203, "add_key": 217, "request_key": 218,
            "keyctl": 219, "clone": 220, "execve": 221, "swapon": 224, "swapoff": 225,
            "perf_event_open": 241, "accept4": 242, "name_to_handle_at": 264,
            "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270,
            "process_vm_writev": 271, "finit_module": 273, "bpf": 280, "execveat": 281,
            "userfaultfd": 282, "kexec_file_load": 294, "io_uring_setup": 425,
            "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
            "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
            "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
        },
    ),
}  # fmt: skip


def supported() -> bool:
    return platform.machine() in _TABLES


def program(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions for this machine's architecture."""
    arch, numbers = _TABLES[machine or platform.machine()]
    denied = sorted({numbers[name] for name in _DENIED_NAMES if name in numbers})
    body: list[tuple[int, int, int, int]] = [(_LD_W_ABS, 0, 0, _NR)]
    if arch == _TABLES["x86_64"][0]:
        body.append((_JGE_K, 0, 1, _X32_BIT))  # an x32 call: refused
        body.append((_RET_K, 0, 0, _DENY))
    for number in denied:
        body += [(_JEQ_K, 0, 1, number), (_RET_K, 0, 0, _DENY)]
    body += [(_JEQ_K, 0, 1, numbers["clone3"]), (_RET_K, 0, 0, _ERRNO | errno.ENOSYS)]
    body += [
        (_JEQ_K, 0, 3, numbers["clone"]),
        (_LD_W_ABS, 0, 0, _ARG0_LOW),  # clone's flags (the low word holds them all)
        (_JSET_K, 1, 0, _CLONE_THREAD),  # a thread: allowed
        (_RET_K, 0, 0, _DENY),  # a process: refused
        (_RET_K, 0, 0, _ALLOW),
    ]
    return [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 1, 0, arch),
        (_RET_K, 0, 0, _KILL_PROCESS),
        *body,
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def no_new_privileges() -> None:
    """No setuid or file capabilities from here on; what lets an unprivileged process
    install a filter or a Landlock ruleset."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ConfinementError(f"no_new_privs failed: {_errno_text()}")


def install() -> None:
    """The filter, for this thread and every thread it starts (call it after
    `no_new_privileges`, before the model's code runs, while the process has one thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    instructions = program()
    raw = b"".join(struct.pack("<HBBI", *instruction) for instruction in instructions)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(instructions), ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise ConfinementError(f"the seccomp filter was refused: {_errno_text()}")


def _errno_text() -> str:
    import os

    return os.strerror(ctypes.get_errno())
