"""Resolve a version through the registry and fetch it into a sha256-keyed cache.

A cached copy is verified (size and sha256) before reuse; a corrupt one is
deleted and fetched again, so a bad disk never serves a bad model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from control_plane import IntegrityError, ModelEntry, Registry
from control_plane.registry import verify_file

logger = logging.getLogger("nexus.model_server")


@dataclass(frozen=True)
class Artifact:
    """A verified local copy of one stored version."""

    entry: ModelEntry
    path: Path
    from_cache: bool


def fetch_version(
    registry: Registry, ref: str, model_name: str | None, cache_dir: Path
) -> Artifact:
    return fetch_entry(registry, registry.resolve(ref, model_name), cache_dir)


def fetch_entry(registry: Registry, entry: ModelEntry, cache_dir: Path) -> Artifact:
    """A verified local copy of `entry`: the cached one if intact, else a fresh download."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / _cache_name(entry)
    if path.is_file():
        try:
            verify_file(path, entry)
        except IntegrityError as exc:
            logger.warning("cached copy %s is corrupt (%s); fetching it again", path, exc)
            path.unlink()
        else:
            logger.info("using cached %s for %s", path, entry.label)
            return Artifact(entry, path, from_cache=True)
    logger.info("fetching %s from %s", entry.label, registry.backend.uri(entry.storage_uri))
    registry.fetch(entry, path)
    return Artifact(entry, path, from_cache=False)


def _cache_name(entry: ModelEntry) -> str:
    suffix = PurePosixPath(entry.storage_uri).suffix
    key = entry.sha256 or f"{entry.model_name}-{entry.commit_hash}"
    return f"{key}{suffix}"
