"""Landlock for a model's worker: the files it may read, the one folder it may write.

Landlock (Linux 5.13+) lets an unprivileged process give up file access for good: every
file right the running kernel knows is handled, and only the paths given here get some
back: read-only paths (the version's files, the Python environment, the system libraries)
and one read-write folder (the worker's private temporary folder). Where the kernel's ABI
has them, TCP bind and connect are refused too (a second wall behind seccomp's) and the
worker may neither signal nor reach abstract sockets outside itself. The system calls are
made through ctypes: their numbers are the same on every architecture.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

from model_server.errors import ConfinementError

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
_MAKE_SYM, _REFER, _TRUNCATE, _IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15

_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
READ = _READ_FILE | _READ_DIR
WRITE = (
    READ | _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG | _MAKE_SYM
    | _REFER | _TRUNCATE
)  # fmt: skip
DEVICE = _READ_FILE | _WRITE_FILE | _IOCTL_DEV  # a GPU's device files


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI (0: none, or turned off)."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(version))


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def restrict(rules: Iterable[tuple[Path, int]], abi: int) -> list[str]:
    """Give up every file right but `rules` (path, rights) for good; what was handled, in
    words. Paths that do not exist are skipped."""
    libc = ctypes.CDLL(None, use_errno=True)
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled, 0, 0)
    said = ["files"]
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        said.append("TCP")
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        said.append("signals")
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        raise ConfinementError(f"landlock_create_ruleset failed: {_errno_text()}")
    try:
        for path, rights in rules:
            _add(libc, ruleset, path, rights & handled)
        if libc.syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            raise ConfinementError(f"landlock_restrict_self failed: {_errno_text()}")
    finally:
        os.close(ruleset)
    return said


def _add(libc: ctypes.CDLL, ruleset: int, path: Path, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # not on this machine (a library folder some systems lack)
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        attr = _PathBeneathAttr(rights, fd)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(attr), 0) != 0:
            raise ConfinementError(f"landlock_add_rule for {path} failed: {_errno_text()}")
    finally:
        os.close(fd)


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())
