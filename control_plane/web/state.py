"""One server's hold on its workspace: the metadata it reads, the desk its changes go
through, and the tokens that say who is asking."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from fastapi import Request

from control_plane.core.errors import UnauthorizedError
from control_plane.metadata import MetadataDocument
from control_plane.registry import Registry
from control_plane.web.changes import Action, Actor, ChangeDesk, Outcome
from control_plane.web.settings import RegistrySettings
from control_plane.web.tokens import TokenBook

COOKIE = "nexus_token"


class RegistryState:
    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        registry = Registry(settings.workspace)
        self.root: Path = registry.root
        self.tokens = TokenBook(settings.tokens) if settings.tokens is not None else None
        self.desk = ChangeDesk(self.root, read_only=self.tokens is None, push=settings.push)
        self.desk.committer.remote = settings.remote
        self._cached: tuple[tuple[int, ...], MetadataDocument] | None = None
        self._cache_lock = threading.Lock()
        # True once the server is stopping: the update streams end then, or a SIGTERM would
        # wait on a connected device's never-ending stream (nexus-registry sets it).
        self.stopping: Callable[[], bool] = lambda: False

    def document(self) -> MetadataDocument:
        """The metadata as the file is now, parsed once per change of the file (10,000
        versions take ~0.2 s to parse and check): keyed by the file's stat, which every
        write (an atomic replace) changes. Read only: changes go through the desk."""
        metadata = Registry(self.root).metadata
        try:
            st = os.stat(metadata.path)
            key: tuple[int, ...] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        with self._cache_lock:
            if key is not None and self._cached is not None and self._cached[0] == key:
                return self._cached[1]
        document = metadata.read()
        if key is not None:
            with self._cache_lock:
                self._cached = (key, document)
        return document

    def apply(self, action: Action, actor: Actor | None) -> Outcome:
        return self.desk.apply(action, actor)

    def actor(self, presented: str | None) -> Actor | None:
        """Who `presented` is; None without tokens (read-only). UnauthorizedError when the
        server has tokens and `presented` is none of them."""
        if self.tokens is None:
            return None
        record = self.tokens.lookup(presented)
        if record is None:
            said = "was not recognised" if presented else "is needed"
            raise UnauthorizedError(
                f"a registry token {said}: 'Authorization: Bearer <token>' (made by "
                "'nexus keys create NAME --role ROLE --file FILE')."
            )
        return Actor(record.name, record.email, record.role)


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None
