"""Resolve a version through the registry and fetch it into a sha256-keyed cache.

A cached copy (a file, or a directory model's whole tree) is verified (size and
sha256 of every file) before reuse; a corrupt one is deleted and fetched again,
so a bad disk never serves a bad model.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from control_plane import IntegrityError, ModelEntry, Registry

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
    if path.exists():
        try:
            registry.objects.verify_local(entry, path)
        except IntegrityError as exc:
            logger.warning("cached copy %s is corrupt (%s); fetching it again", path, exc)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            logger.info("using cached %s for %s", path, entry.label)
            return Artifact(entry, path, from_cache=True)
    logger.info("fetching %s from %s", entry.label, registry.backend.uri(entry.storage_uri))
    registry.objects.fetch(entry, path)
    return Artifact(entry, path, from_cache=False)


def _cache_name(entry: ModelEntry) -> str:
    suffix = ".tree" if entry.is_tree else PurePosixPath(entry.storage_uri).suffix
    key = entry.sha256 or f"{entry.model_name}-{entry.commit_hash}"
    return f"{key}{suffix}"
