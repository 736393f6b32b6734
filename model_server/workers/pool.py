"""One version's worker processes, as the server holds them: started, lent one batch at a
time, replaced when one dies, and given up on when they keep dying.

A batch takes an idle worker (waiting up to the batch deadline for one), writes its inputs
into that worker's inbox, and waits up to the deadline for the reply. A worker that
closes its channel (a crash), answers nothing in time (a hang: it is killed), or breaks
the protocol fails the batch it held (`WorkerFailedError`: the wire's whole-batch
failure) and is replaced in the background. `MAX_DEATHS` deaths within `DEATH_WINDOW_S`
and the pool gives up: `failing` says why, every batch fails at once, and `on_failing`
tells the service, whose delivery rules roll the version back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from model_server.errors import (
    ChannelClosedError,
    ModelLoadError,
    WorkerFailedError,
    WorkerProtocolError,
)
from model_server.workers.arena import Arena
from model_server.workers.channel import Channel
from model_server.workers.spec import WorkerSpec
from model_server.workers.zygote import Zygote, describe_status

logger = logging.getLogger("nexus.model_server")

MAX_DEATHS = 3
DEATH_WINDOW_S = 300.0
R = TypeVar("R")


class Worker:
    """One worker process: its pid, its channel and its two arenas."""

    def __init__(self, zygote: Zygote, spec: WorkerSpec, number: int) -> None:
        self.number = number
        self.tmpdir = tempfile.mkdtemp(prefix=f"nexus-worker-{number}-")
        self.spec = WorkerSpec(**{**spec.to_json(), "tmpdir": self.tmpdir})
        self.inbox = Arena.create("inbox")
        self.outbox = Arena.create("outbox")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.pid = zygote.spawn([theirs.fileno(), self.inbox.fd, self.outbox.fd])
        finally:
            theirs.close()
        self.channel = Channel(ours)
        self.channel.send(self.spec.to_json())
        self.ready: dict[str, Any] = {}

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """The worker's `ready` message, or ModelLoadError with what went wrong."""
        try:
            reply = self.channel.receive(timeout_s)
        except TimeoutError:
            raise ModelLoadError(
                f"{self.spec.label} did not load within {timeout_s:.0f} s."
            ) from None
        except ChannelClosedError:
            raise ModelLoadError(f"{self.spec.label}'s worker ended while loading it.") from None
        if "error" in reply:
            raise ModelLoadError(str(reply["error"]), hint=reply.get("hint"))
        self.ready = reply
        return reply

    def call(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.channel.send(message)
        return self.channel.receive(timeout_s)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Ask it to exit (it finishes nothing: it holds no batch), and let go of its parts."""
        with contextlib.suppress(OSError):
            self.channel.send({"op": "close"})
        self.channel.close()
        self.inbox.close()
        self.outbox.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class WorkerPool:
    """`instances` workers of one version."""

    def __init__(
        self,
        spec: WorkerSpec,
        instances: int,
        *,
        batch_timeout_s: float,
        load_timeout_s: float,
        on_failing: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.instances = instances
        self.batch_timeout_s = batch_timeout_s
        self.load_timeout_s = load_timeout_s
        self.on_failing = on_failing
        self.failing: str | None = None
        self.workers: list[Worker] = []
        self._idle: queue.SimpleQueue[Worker | None] = queue.SimpleQueue()  # None: given up
        self._deaths: deque[float] = deque()
        self._lock = threading.Lock()
        self._busy = 0
        self._retiring = False
        self._closed = False
        self._numbers = iter(range(1, 1 << 30))
        # a pool dropped without close() (a load that failed later) still stops its workers
        self._finalizer = weakref.finalize(self, _close_all, self.workers)

    def start(self) -> dict[str, Any]:
        """Start every instance (loading in parallel); the first one's `ready` message."""
        zygote = Zygote.shared()
        started: list[Worker] = []
        try:
            for _ in range(self.instances):
                started.append(Worker(zygote, self.spec, next(self._numbers)))
            ready = [worker.wait_ready(self.load_timeout_s) for worker in started]
        except BaseException:
            for worker in started:
                worker.kill()
                worker.close()
            raise
        for worker in started:
            self._add(worker)
        return ready[0]

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [worker.pid for worker in self.workers]

    def run(
        self,
        prepare: Callable[[Worker], dict[str, Any]],
        finish: Callable[[Worker, dict[str, Any]], R],
    ) -> R:
        """One batch on one worker: `prepare` writes its inputs and returns the message,
        `finish` reads the reply (and copies what it keeps out of the arena)."""
        worker = self._acquire()
        try:
            reply = worker.call(prepare(worker), self.batch_timeout_s)
            result = finish(worker, reply)
        except TimeoutError:
            worker.kill()
            raise self._lost(
                worker, f"did not answer within {self.batch_timeout_s:g} s and was stopped"
            ) from None
        except ChannelClosedError:
            raise self._lost(worker, describe_status(_status(worker))) from None
        except (WorkerProtocolError, OSError) as exc:
            worker.kill()
            raise self._lost(worker, f"broke the protocol ({exc}) and was stopped") from None
        except BaseException:
            self._release(worker)
            raise
        self._release(worker)
        return result

    def retire(self) -> None:
        """Stop the workers once the batches they hold are answered (a replaced version)."""
        with self._lock:
            self._retiring = True
            idle = self._busy == 0
        if idle:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self.workers)
            self.workers.clear()
        _close_all(workers)

    # -- lending ---------------------------------------------------------------

    def _acquire(self) -> Worker:
        if self.failing is not None:
            raise WorkerFailedError(self.failing)
        try:
            worker = self._idle.get(timeout=self.batch_timeout_s)
        except queue.Empty:
            raise WorkerFailedError(
                f"no worker of {self.spec.label} was free within {self.batch_timeout_s:g} s "
                "(its workers are restarting)."
            ) from None
        if worker is None:  # woken by `_give_up`: wake the next waiter too
            self._idle.put(None)
            raise WorkerFailedError(self.failing or "the workers are gone.")
        with self._lock:
            self._busy += 1
        return worker

    def _release(self, worker: Worker) -> None:
        with self._lock:
            self._busy -= 1
            done = self._retiring and self._busy == 0
        self._idle.put(worker)
        if done:
            self.close()

    def _add(self, worker: Worker) -> None:
        with self._lock:
            closed = self._closed or (self._retiring and self._busy == 0)
            if not closed:
                self.workers.append(worker)
        if closed:
            worker.close()
        else:
            self._idle.put(worker)

    # -- losing ----------------------------------------------------------------

    def _lost(self, worker: Worker, how: str) -> WorkerFailedError:
        """A worker that died holding a batch: say so, replace it (or give up); the error
        its batch fails with."""
        message = f"the worker of {self.spec.label} (pid {worker.pid}) {how}"
        logger.error("%s; its batch failed", message)
        now = time.monotonic()
        with self._lock:
            self._busy -= 1
            if worker in self.workers:
                self.workers.remove(worker)
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - DEATH_WINDOW_S:
                self._deaths.popleft()
            give_up = len(self._deaths) >= MAX_DEATHS and self.failing is None
            closed = self._closed or self._retiring
        worker.close()
        if give_up:
            self._give_up(f"{len(self._deaths)} of its workers died within "
                          f"{DEATH_WINDOW_S:g} s; the last {how}")  # fmt: skip
        elif not closed and self.failing is None:
            threading.Thread(target=self._replace, name="worker-restart", daemon=True).start()
        return WorkerFailedError(f"{message}; the batch failed and the worker is restarting.")

    def _replace(self) -> None:
        try:
            worker = Worker(Zygote.shared(), self.spec, next(self._numbers))
            try:
                worker.wait_ready(self.load_timeout_s)
            except BaseException:
                worker.kill()
                worker.close()
                raise
        except Exception as exc:
            logger.error("restarting a worker of %s failed: %s", self.spec.label, exc)
            with self._lock:
                self._deaths.append(time.monotonic())
                give_up = len(self._deaths) >= MAX_DEATHS and self.failing is None
            if give_up:
                self._give_up(f"its workers keep failing to restart: {exc}")
            else:
                self._replace()
            return
        logger.info("%s: worker %d restarted (pid %d)", self.spec.label, worker.number, worker.pid)
        self._add(worker)

    def _give_up(self, reason: str) -> None:
        self.failing = f"{self.spec.label} is failing: {reason}."
        logger.error("%s", self.failing)
        self._idle.put(None)  # every batch waiting for a worker fails now, not at its deadline
        if self.on_failing is not None:
            self.on_failing(self.failing)


def _close_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.close()


def _status(worker: Worker) -> int | None:
    try:
        return Zygote.shared().status(worker.pid)
    except WorkerFailedError:
        return None
