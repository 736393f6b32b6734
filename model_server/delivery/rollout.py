"""Following a ref: resolve it, check the version may be served, load, canary, promote or roll back.

One `Rollout` per server. Every check (at start, each poll interval, each
`POST /admin/reload`) fetches the remote if one is followed, looks at the
metadata file, and when it changed resolves the ref again. A new target is
rolled out in a task of its own, so checks go on meanwhile; a target that
moves again supersedes the candidate. A version that failed (to load, or its
canary) is not tried again until the ref moves to another version.

The first check is the start: a ref that resolves to nothing yet, or a metadata
file that cannot be read or parsed, leaves the server up and waiting (`/ready`
503 says why, and the file is looked at again each poll); a version that is
there but cannot be loaded stops the server (exit 1), as before following existed.
The loops run under the server's supervisor (`loops()`): a crash is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control_plane import (
    MetadataFileError,
    ModelEntry,
    NexusError,
    NotFoundError,
    Registry,
    TrustError,
)
from control_plane.core.hardware import Machine, Requirements, unmet
from control_plane.metadata import METADATA_FILENAME
from control_plane.registry import lifecycle
from control_plane.registry.workspace import Workspace
from model_server.delivery import events as ev
from model_server.delivery.canary import Verdict
from model_server.delivery.events import EventLog
from model_server.delivery.publish import RolloutPublisher
from model_server.delivery.stream import GrpcStreamFollower, StreamFollower
from model_server.delivery.watch import FileWatcher, GitFollower
from model_server.errors import FollowError
from model_server.inference import resolve_device
from model_server.service import (
    LoadedVersion,
    ModelService,
    Trial,
    rules_from,
    version_info,
    version_key,
)
from model_server.settings import ServerSettings
from nexus_common.supervise import Loop

logger = logging.getLogger("nexus.model_server")

VERDICT_CHECK_S = 0.25  # a window can end by time alone, between batches


class Rollout:
    """The server's delivery loop over a `ModelService`."""

    def __init__(
        self,
        service: ModelService,
        settings: ServerSettings,
        on_fatal: Callable[[NexusError], None] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.publisher = RolloutPublisher(settings)
        self.events = EventLog(sink=self.publisher)
        self._on_fatal = on_fatal
        self._follower: GitFollower | None = None
        self._stream: StreamFollower | GrpcStreamFollower | None = None
        if settings.registry_url:  # device mode: the workspace holds what the stream sends
            root = settings.repo.resolve()
            root.mkdir(parents=True, exist_ok=True)
            follower = (
                GrpcStreamFollower
                if settings.registry_url.startswith("grpc://")
                else StreamFollower
            )
            self._stream = follower(
                settings.registry_url,
                settings.model_name or "",
                settings.model_ref,
                root,
                self._kick_soon,
                settings.registry_token,
            )
            self._watcher = FileWatcher(root / METADATA_FILENAME)
        elif settings.git_remote:  # the workspace is the server's own clone, maybe not made yet
            root = settings.repo.resolve()
            self._follower = GitFollower(root, settings.git_remote, settings.git_branch)
            self._watcher = FileWatcher(root / METADATA_FILENAME)
        else:
            self._watcher = FileWatcher(_followed_metadata(settings.repo))
        self._failed: dict[str, str] = {}  # version key -> why; cleared when the ref moves
        self._target: ModelEntry | None = None
        self._job: asyncio.Task[None] | None = None
        self._job_key: str | None = None
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        self._notice: tuple[str, str | None] | None = None  # the last waiting/refused, said once
        self._pull_failure: str | None = None
        self._started = False
        self._machine: Machine | None = None  # this server's device, probed when first needed
        service.on_failing = self._version_failing

    # -- the loop --------------------------------------------------------------

    def loops(self) -> dict[str, Loop]:
        """The background loops this model needs, by name: the server runs each under its
        supervisor (restarted after a crash, named in /health while down)."""
        loops: dict[str, Loop] = {"follower": self.run}
        if self._stream is not None:
            loops["update-stream"] = self._stream.run
        return loops

    async def run(self) -> None:
        """Check at start, then every poll interval (or when kicked) while following."""
        await self.check()
        while self.settings.follows:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await self._kick.wait()
            self._kick.clear()
            await self.check()

    def _kick_soon(self) -> None:
        self._kick.set()

    async def stop(self) -> None:
        await self._cancel_job()
        await asyncio.to_thread(self.publisher.close)

    async def reload(self) -> dict[str, Any]:
        """Check now (a CI job that just pushed); the state after the check."""
        await self.check(force=True)
        return self.status()

    async def check(self, *, force: bool = False) -> None:
        async with self._lock:
            first, self._started = not self._started, True
            if self._follower is not None and self.settings.follows:
                await self._pull()
            changed = self._watcher.changed()
            if not (changed or force or first):
                return
            try:
                entry, refusal = await asyncio.to_thread(self._resolve)
            except NotFoundError:
                self._wait(ev.WAITING, None, self._nothing_yet())
                return
            except MetadataFileError as exc:  # expected: waits, and is picked up once fixed
                if self._wait(ev.METADATA_UNREADABLE, None, exc.message):
                    logger.warning("%s; waiting for it to be fixed", exc.message.rstrip("."))
                return
            except NexusError as exc:
                if first:
                    self._fatal(exc)
                else:
                    self._wait(ev.FOLLOW_FAILED, None, exc.message)
                return
            self._target = entry
            if refusal is not None:
                self._wait(ev.REFUSED, version_info(entry), refusal)
                return
            self._notice = None
            key = version_key(entry)
            self._failed = {k: why for k, why in self._failed.items() if k == key}
            serving = self.service.serving
            if serving is not None and serving.key == key:
                if self._job_key not in (None, key):
                    await self._cancel_job(superseded_by=entry)
                return
            if self._job_key == key or key in self._failed:
                return
            await self._cancel_job(superseded_by=entry)
            self._job_key = key
            self._job = asyncio.get_running_loop().create_task(self._roll_out(entry, first))

    def kick(self) -> None:
        self._kick.set()

    # -- one rollout -----------------------------------------------------------

    async def _roll_out(self, entry: ModelEntry, first: bool, restore: str | None = None) -> None:
        key = version_key(entry)
        try:
            await self._deliver(entry, first, restore)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not end following; say it and mark the version
            logger.exception("the rollout of %s failed", entry.label)
            self._failed[key] = f"the rollout failed: {exc}"
        finally:
            if self._job_key == key:
                self._job, self._job_key = None, None

    async def _deliver(self, entry: ModelEntry, first: bool, restore: str | None) -> None:
        """Load `entry`, then serve it: at once when nothing serves (or when `restore`
        says why the serving version is being replaced by this earlier one), else after
        its canary."""
        info = version_info(entry)
        self.events.add(ev.LOADING, info)
        try:
            version = await self.service.load(entry)
        except Exception as exc:
            error = exc if isinstance(exc, NexusError) else NexusError(f"loading failed: {exc}")
            if not isinstance(exc, NexusError):
                logger.exception("loading %s failed", entry.label)
            self._failed[version_key(entry)] = error.message
            self.events.add(ev.LOAD_FAILED, info, reason=error.message)
            if self.service.serving is None:
                if first:
                    self._fatal(error)
                self.service.not_ready = f"{entry.label} could not be loaded: {error.message}"
            return
        loaded = round(version.load_seconds, 3)
        service = self.service
        if service.serving is None or restore is not None:
            service.serve(version)
            self.events.add(ev.SERVING, info, load_seconds=loaded, reason=restore)
            return
        rules = rules_from(self.settings)
        if rules.percent == 0:
            service.serve(version)
            self.events.add(
                ev.PROMOTED, info, reason="no canary (canary percent is 0)", load_seconds=loaded
            )
            return
        trial = service.start_trial(version, rules)
        self.events.add(
            ev.CANARY,
            info,
            percent=rules.percent,
            min_items=rules.min_items,
            min_seconds=rules.min_seconds,
            load_seconds=loaded,
        )
        try:
            verdict = await _verdict_of(trial)
        except asyncio.CancelledError:
            service.end_trial(trial)
            service.discard(version)
            raise
        service.end_trial(trial)
        self._judge(version, verdict)

    def _judge(self, version: LoadedVersion, verdict: Verdict) -> None:
        info = version.info
        if verdict.promote:
            self.service.serve(version)
            self.events.add(ev.PROMOTED, info, reason=verdict.reason, figures=verdict.figures)
            return
        self.service.discard(version)
        self.service.metrics.rollbacks.inc()
        self._failed[version.key] = verdict.reason
        self.events.add(ev.ROLLED_BACK, info, reason=verdict.reason, figures=verdict.figures)

    def _version_failing(self, entry: ModelEntry, reason: str) -> None:
        """A version's workers keep dying: a candidate's trial ends in a rollback, a serving
        version is rolled back to the one it replaced. Not tried again until the ref moves."""
        key = version_key(entry)
        self._failed[key] = reason
        trial = self.service.trial
        if trial is not None and trial.version.key == key:
            if not trial.verdict.done():
                window = trial.window
                figures = {
                    "candidate": window.candidate.summary(),
                    "current": window.current.summary(),
                }
                trial.verdict.set_result(Verdict(promote=False, reason=reason, figures=figures))
            return
        serving = self.service.serving
        if serving is None or serving.key != key:
            return
        previous = self.service.previous
        self.service.metrics.rollbacks.inc()
        self.events.add(
            ev.ROLLED_BACK,
            version_info(entry),
            reason=reason,
            to=version_info(previous) if previous is not None else None,
        )
        if previous is None:
            logger.error("%s has no earlier version to roll back to; it keeps serving", entry.label)
            return
        self._job_key = version_key(previous)
        restore = f"rolled back from {entry.label}: {reason}"
        self._job = asyncio.get_running_loop().create_task(self._roll_out(previous, False, restore))

    async def _cancel_job(self, superseded_by: ModelEntry | None = None) -> None:
        job, self._job, self._job_key = self._job, None, None
        if job is None or job.done():
            return
        trial = self.service.trial
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        if superseded_by is not None:
            self.events.add(
                ev.SUPERSEDED,
                trial.version.info if trial is not None else None,
                reason=f"the ref moved to {superseded_by.label}",
            )

    # -- helpers ---------------------------------------------------------------

    async def _pull(self) -> None:
        assert self._follower is not None
        try:
            await asyncio.to_thread(self._follower.pull)
        except FollowError as exc:
            if str(exc) != self._pull_failure:
                self.events.add(ev.FOLLOW_FAILED, None, reason=str(exc))
            self._pull_failure = str(exc)
        else:
            self._pull_failure = None

    def _resolve(self) -> tuple[ModelEntry, str | None]:
        """The version the ref names, and why it may not be rolled out (None: it may).

        Trust is judged here, before any byte moves, and again on every change of the
        metadata: a version refused for want of a signed approval rolls out once it has one.
        """
        registry = Registry(self.settings.repo)
        entry = registry.resolve(self.settings.model_ref, self.settings.model_name)
        refusal = _refusal(entry, registry.config.require_approval) or self._unmet(entry)
        if refusal is None:
            try:
                registry.check_trust(entry)
            except TrustError as exc:
                refusal = exc.message
        return entry, refusal

    def _unmet(self, entry: ModelEntry) -> str | None:
        """Why this machine cannot run `entry` (`nexus store --requires ...`), before a byte
        of it is downloaded; None when it can, or it requires nothing."""
        if not entry.requires:
            return None
        if self._machine is None:
            self._machine = Machine.probe(resolve_device(self.settings.device))
        return unmet(Requirements.from_json(entry.requires), self._machine, entry.label)

    def _nothing_yet(self) -> str:
        name, ref = self.settings.model_name, self.settings.model_ref
        what = f"of {name}" if name else "of any model"
        if ref == "latest":
            return f"no version {what} is stored yet"
        if ref in lifecycle.STAGES:
            return f"no version {what} is in {ref} yet"
        return f"no version {what} is at '{ref}' yet"

    def _wait(self, event: str, version: dict[str, Any] | None, reason: str) -> bool:
        """Say once why nothing (new) is rolled out; the serving version, if any, goes on.
        True when this is news (not said since the last change)."""
        if self.service.serving is None:
            self.service.not_ready = reason
        notice = (event, reason)
        if notice == self._notice:
            return False
        self._notice = notice
        self.events.add(event, version, reason=reason)
        return True

    def _fatal(self, error: NexusError) -> None:
        self.service.not_ready = error.message
        if self._on_fatal is not None:
            self._on_fatal(error)

    def _waiting(self) -> dict[str, str | None] | None:
        """Why the last change was not rolled out (unreadable metadata, a refusal...)."""
        if self._notice is None:
            return None
        event, reason = self._notice
        return {"event": event, "reason": reason}

    def status(self) -> dict[str, Any]:
        """What `/model` adds: the ref, the rollout's state and the candidate's live figures."""
        service = self.service
        trial = service.trial
        candidate: dict[str, Any] | None = None
        if trial is not None:
            candidate = {
                "version": trial.version.info,
                "state": ev.CANARY,
                "percent": trial.window.rules.percent,
                "figures": {
                    "candidate": trial.window.candidate.summary(),
                    "current": trial.window.current.summary(),
                },
            }
        elif self._job is not None and self._target is not None:
            candidate = {"version": version_info(self._target), "state": ev.LOADING}
        last = self.events.last(ev.PROMOTED, ev.ROLLED_BACK, ev.LOAD_FAILED, ev.REFUSED)
        return {
            "ref": self.settings.model_ref,
            "following": self.settings.follows,
            "serving": service.serving.info if service.serving else None,
            "reason": None if service.serving else service.not_ready,
            "waiting": self._waiting(),
            "candidate": candidate,
            "last_rollout": last,
        }


async def _verdict_of(trial: Trial) -> Verdict:
    while not trial.verdict.done():
        await asyncio.wait([trial.verdict], timeout=VERDICT_CHECK_S)
        trial.decide()
    return trial.verdict.result()


def _refusal(entry: ModelEntry, require_approval: bool) -> str | None:
    """Why this version may not be rolled out, or None."""
    if entry.status == lifecycle.REJECTED:
        why = f" ({entry.status_reason})" if entry.status_reason else ""
        return f"{entry.label} is rejected{why}; it is never served"
    if entry.stage == lifecycle.ARCHIVED:
        return f"{entry.label} is archived; it is never served"
    if require_approval and entry.status != lifecycle.APPROVED:
        return (
            f"{entry.label} is {entry.status or 'not reviewed'}; require_approval is on, "
            "so only approved versions are served"
        )
    return None


def _followed_metadata(repo: Path) -> Path:
    """The metadata file as reached through `repo`'s links, not resolved once: the git-sync
    sidecar moves its `current` link to each new checkout and deletes the old one."""
    root = Workspace(repo).root
    through_links = Path(os.path.abspath(repo))
    if root == through_links.resolve():
        return through_links / METADATA_FILENAME
    return root / METADATA_FILENAME
