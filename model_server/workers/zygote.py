"""The zygote: one clean process per server that forks the model workers.

A worker must start from a process that never held the server's secrets or threads, and
quickly (a restart after a crash, a new version, N instances). The zygote is started once,
with the worker environment (`spec.worker_environment`: no credentials), imports the heavy
libraries (numpy, torch, onnxruntime) and nothing else, and then forks a worker for each
request: a fork of a warm, single-threaded process takes milliseconds where a fresh
interpreter takes a second and a half to import torch.

The server talks to it over a SOCK_SEQPACKET socketpair: `spawn` hands over a worker's
channel and arenas (SCM_RIGHTS) and returns its pid; `status` returns a reaped worker's
wait status (the zygote is its parent). It exits when the server's end closes; its
workers die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

import orjson

from model_server.errors import WorkerFailedError
from model_server.workers.spec import worker_environment

logger = logging.getLogger("nexus.model_server")

_PR_SET_PDEATHSIG = 1
_MAX_MESSAGE = 4096
STATUS_WAIT_S = 2.0


class Zygote:
    """The server's handle on its zygote (one per process, started on first use)."""

    _shared: Zygote | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._process = subprocess.Popen(  # our own module, our interpreter
            [sys.executable, "-m", "model_server.workers.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=worker_environment(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl+C is the server's to handle
        )
        theirs.close()
        self._socket = ours
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> Zygote:
        with cls._shared_lock:
            if cls._shared is None or not cls._shared.alive:
                cls._shared = cls()
            return cls._shared

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def spawn(self, fds: list[int]) -> int:
        """A new worker holding these descriptors (channel, inbox, outbox); its pid."""
        reply = self._ask({"op": "spawn"}, fds)
        return int(reply["pid"])

    def status(self, pid: int) -> int | None:
        """A worker's wait status once it has exited (None if it has not, after a while)."""
        status = self._ask({"op": "status", "pid": pid}).get("status")
        return None if status is None else int(status)

    def _ask(self, request: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        with self._lock:
            try:
                socket.send_fds(self._socket, [orjson.dumps(request)], fds or [])
                raw = self._socket.recv(_MAX_MESSAGE)
            except OSError as exc:
                raise WorkerFailedError(f"the worker zygote is gone: {exc}") from None
        if not raw:
            code = self._process.wait()
            raise WorkerFailedError(f"the worker zygote exited (status {code})")
        reply = orjson.loads(raw)
        assert isinstance(reply, dict)
        return reply

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)


def describe_status(status: int | None) -> str:
    """How a worker ended, in words."""
    if status is None:
        return "ended (its status is not known)"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


# -- the zygote process --------------------------------------------------------------------


def main(control_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=control_fd)
    _preload()
    statuses: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([control], [], [], 0.5)
        _reap(statuses)
        if not readable:
            continue
        raw, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, 3)
        if not raw:
            return  # the server is gone; our workers follow (their death signal)
        request = orjson.loads(raw)
        if request.get("op") == "spawn":
            pid = os.fork()
            if pid == 0:
                _child(control, fds)
            for fd in fds:
                os.close(fd)
            control.send(orjson.dumps({"pid": pid}))
        elif request.get("op") == "status":
            control.send(orjson.dumps({"status": _status(int(request["pid"]), statuses)}))


def _preload() -> None:
    """Import what every worker needs once, here, so forks start warm."""
    import numpy  # noqa: F401

    for heavy in ("torch", "onnxruntime"):
        with contextlib.suppress(ImportError):
            __import__(heavy)
    import model_server.workers.worker  # noqa: F401


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = status
        if len(statuses) > 1024:  # never asked about: forget the oldest
            statuses.pop(next(iter(statuses)))


def _status(pid: int, statuses: dict[int, int]) -> int | None:
    deadline = time.monotonic() + STATUS_WAIT_S
    while pid not in statuses and time.monotonic() < deadline:
        _reap(statuses)
        time.sleep(0.01)
    return statuses.pop(pid, None)


def _child(control: socket.socket, fds: list[int]) -> None:
    """In the new worker: die with the zygote, then serve; never return into the loop."""
    status = 70
    try:
        control.close()
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the zygote died between the fork and the line above
            os._exit(status)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
        from model_server.workers import worker

        status = worker.serve(*fds)
    except BaseException:  # a worker's last words, then its exit status
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


if __name__ == "__main__":
    main(int(sys.argv[1]))
