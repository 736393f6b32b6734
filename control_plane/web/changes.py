"""Lifecycle actions from the web: checked against the actor's role, applied with the
registry exactly as the CLI applies them, and committed as the actor, one at a time.

Concurrent requests queue on one lock, so each action reads the state the previous one
left and none is lost; with `push`, each commit is pushed before the next action
starts (a rejected push is merged and retried). An action the registry refuses changes
nothing; one whose commit fails is undone in the working tree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from control_plane.core.errors import ForbiddenError, GitError, ReadOnlyError
from control_plane.metadata import ModelEntry
from control_plane.registry import Registry
from control_plane.registry.commits import Committer
from control_plane.web.roles import Role, allows, needed_for
from control_plane.web.views import name_of

_ARTICLE = {Role.READER: "a", Role.MAINTAINER: "a", Role.APPROVER: "an", Role.ADMIN: "an"}


@dataclass(frozen=True)
class Actor:
    name: str
    email: str
    role: Role

    @property
    def ident(self) -> str:
        return f"{self.name} <{self.email}>"


@dataclass(frozen=True)
class Action:
    """One change: `kind` is a key of roles.ACTIONS; `ref` a version of `model`."""

    kind: str
    model: str
    ref: str
    stage: str | None = None  # promote
    reason: str | None = None  # reject
    alias: str | None = None  # alias, unalias
    force: bool = False  # delete a version that holds a stage


@dataclass(frozen=True)
class Outcome:
    entry: ModelEntry
    message: str
    commit: str | None  # None: nothing changed
    pushed: bool = False


class ChangeDesk:
    """Where every change of one workspace goes through."""

    def __init__(self, root: Path, *, read_only: bool, push: bool = False) -> None:
        self.root = root
        self.read_only = read_only
        self.push = push
        self.committer = Committer(root)
        self._lock = threading.Lock()

    def check(self, action: Action, actor: Actor | None) -> Actor:
        """Refuse, with the role needed, what `actor` may not do (nobody may do anything);
        the actor who may."""
        if self.read_only:
            raise ReadOnlyError(
                "this registry is read-only: it was started without --tokens, so nobody can "
                "change it here."
            )
        needed = needed_for(action.kind, action.stage)
        if actor is None or not allows(actor.role, action.kind, action.stage):
            what = _describe(action)
            who = (
                f"token '{actor.name}' is {_ARTICLE[actor.role]} {actor.role.label}"
                if actor
                else "no token was given"
            )
            raise ForbiddenError(f"{what} needs the {needed.label} role; {who}.")
        return actor

    def apply(self, action: Action, actor: Actor | None) -> Outcome:
        actor = self.check(action, actor)
        with self._lock:
            # The change's event is published once its commit is made: a change whose
            # commit fails is put back, and must not have been announced.
            registry = Registry(self.root, who=actor.ident, hold_events=True)
            entry, message = _run(registry, action)
            try:
                commit = self.committer.commit(
                    f"{message}\n\nVia nexus-registry by {actor.name} ({actor.role.label}).",
                    actor.ident,
                )
            except GitError:
                self.committer.discard()
                raise
            registry.publish_held()
            pushed = False
            if self.push and commit is not None:
                try:
                    self.committer.push()
                except GitError as exc:
                    raise GitError(
                        f"the change is committed here ({commit[:7]}) but not shared: "
                        f"{exc.message} The next change pushes it again."
                    ) from exc
                pushed = True
            return Outcome(entry, message, commit, pushed)


def _describe(action: Action) -> str:
    if action.kind == "promote":
        return f"promoting to {action.stage}"
    return {
        "archive": "archiving",
        "rollback": "rolling back",
        "alias": "setting an alias",
        "unalias": "removing an alias",
        "approve": "approving",
        "reject": "rejecting",
        "delete": "deleting a version",
    }[action.kind]


def _named(entry: ModelEntry) -> str:
    return f"{name_of(entry)} ({entry.short_hash})"


def _run(registry: Registry, action: Action) -> tuple[ModelEntry, str]:
    """Apply `action`; the entry it acted on and the commit message's first line."""
    model, ref = action.model, action.ref
    if action.kind == "promote":
        entry, previous = registry.promote(ref, model, action.stage or "")
        was = f" (was {_named(previous)})" if previous is not None and previous is not entry else ""
        return entry, f"Promote {_named(entry)} to {action.stage}{was}"
    if action.kind == "archive":
        entry = registry.archive(ref, model)
        return entry, f"Archive {_named(entry)}"
    if action.kind == "rollback":
        entry = registry.rollback(ref, model).entry
        return entry, f"Roll back {model} to {_named(entry)}"
    if action.kind == "approve":
        entry = registry.approve(ref, model)
        return entry, f"Approve {_named(entry)}"
    if action.kind == "reject":
        entry = registry.reject(ref, model, action.reason or "")
        return entry, f"Reject {_named(entry)}: {(action.reason or '').strip()}"
    if action.kind == "alias":
        entry, _ = registry.set_alias(f"{model}@{ref}", action.alias or "")
        return entry, f"Alias {model}@{action.alias} -> {_named(entry)}"
    if action.kind == "unalias":
        entry = registry.remove_alias(model, action.alias or "")
        return entry, f"Remove alias {model}@{action.alias} (was {_named(entry)})"
    if action.kind == "delete":
        entry, _ = registry.delete(f"{model}@{ref}", force=action.force)
        return entry, f"Delete {_named(entry)}"
    raise ValueError(f"unknown action {action.kind}")
