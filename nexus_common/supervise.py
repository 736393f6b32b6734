"""Background tasks that never die silently: restarted with backoff, and named while down.

A server's background loops (the model server's follower and update stream, the proxy's
health checks, DNS discovery and key reload) handle the failures they expect themselves.
Anything else ends the loop's coroutine; here that is logged once with its traceback,
the loop is started again after a backoff, and `down` names it (with the error) until
its new run has lasted `settle_s`, so `/health` can answer 503 and an orchestrator
restart the process if the loop does not recover. Standard library only: both servers
use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # between restarts, then 30 s each
SETTLE_S = 2.0  # a restarted loop that runs this long is taken to have recovered

Loop = Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """Runs named background loops; `down` maps each crashed one to its error."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        backoff_s: tuple[float, ...] = BACKOFF_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._logger = logger
        self._backoff_s = backoff_s
        self._settle_s = settle_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.down: dict[str, str] = {}

    def start(self, name: str, loop: Loop) -> None:
        """Run `loop()` in the background under `name`, restarting it after a crash."""
        if name in self._tasks:
            raise ValueError(f"a background task named {name!r} is already running")
        self._tasks[name] = asyncio.get_running_loop().create_task(
            self._keep(name, loop), name=name
        )

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self, name: str, loop: Loop) -> None:
        crashes = 0
        said: str | None = None
        while True:
            run = asyncio.get_running_loop().create_task(loop(), name=f"{name}-run")
            try:
                if crashes:
                    await asyncio.wait([run], timeout=self._settle_s)
                    if not run.done():
                        self._logger.warning("background task %s recovered", name)
                        self.down.pop(name, None)
                        crashes, said = 0, None
                await run
                return  # a loop that ends by itself is done
            except asyncio.CancelledError:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                delay = self._backoff_s[min(crashes, len(self._backoff_s) - 1)]
                if error != said:  # the traceback once; the same crash again in one line
                    self._logger.error(
                        "background task %s failed; restarting it in %g s",
                        name,
                        delay,
                        exc_info=exc,
                    )
                else:
                    self._logger.error("background task %s failed again: %s", name, error)
                said = error
                self.down[name] = error
                crashes += 1
                await asyncio.sleep(delay)

    def report(self, name: str, error: str | None) -> None:
        """For a worker that is not a loop here (a thread): down with `error`, or up."""
        if error is None:
            self.down.pop(name, None)
        else:
            self.down[name] = error

    def health(self) -> tuple[int, dict[str, Any]]:
        """What `/health` answers: 200, or 503 naming every task that is down and why."""
        if not self.down:
            return 200, {"status": "ok"}
        names = ", ".join(sorted(self.down))
        return 503, {
            "error": f"background task {names} failed and is being restarted.",
            "tasks": dict(self.down),
        }
