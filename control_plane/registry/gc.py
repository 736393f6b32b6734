"""Garbage collection: delete stored objects nothing can reach any more, never one that is.

An object is kept if any version reaches it (its file, or a directory's manifest
and files) in `.nexus_meta.json` as any local branch, tag, remote-tracking ref,
HEAD, the index or the working tree has it; if it is younger than the grace
period by the store's own time (a store on another machine may not have pushed
its metadata yet; a store that reuses an object renews its time); or if it was
written after gc started. Only keys under the model names this repository knows
are considered, so a bucket shared with other projects or repositories is safe.
Each object is checked again just before it is deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from control_plane.core.errors import ObjectNotFoundError
from control_plane.metadata import METADATA_FILENAME, MetadataDocument
from control_plane.metadata.document import CONFLICT_START
from control_plane.registry.conflicts import read_side, split_markers
from control_plane.registry.objects import Objects, model_folder
from control_plane.storage import ObjectInfo

if TYPE_CHECKING:
    from control_plane.registry.git import GitRepo  # gitpython is slow to import

# Objects written this close to gc's start are never collected: file systems stamp times
# from a coarse clock, and S3 keeps whole seconds.
CLOCK_MARGIN_S = 2.0


@dataclass
class GcPlan:
    """What gc found: the objects it would delete, and why the others stay."""

    sources: list[str]
    models: list[str]
    scanned: int = 0
    referenced: int = 0
    young: int = 0
    candidates: list[ObjectInfo] = field(default_factory=list)

    @property
    def candidate_bytes(self) -> int:
        return sum(info.size for info in self.candidates)


@dataclass
class GcOutcome:
    deleted: list[ObjectInfo] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # changed or gone since the plan

    @property
    def deleted_bytes(self) -> int:
        return sum(info.size for info in self.deleted)


def plan(
    objects: Objects,
    git: GitRepo,
    working_file: Path,
    prefix: str,
    grace_s: float,
    *,
    started: float | None = None,
) -> GcPlan:
    """Find what is safe to delete; deletes nothing."""
    started = time.time() if started is None else started
    cutoff = started - max(grace_s, CLOCK_MARGIN_S)
    sources, documents = reachable_documents(git, working_file)
    reachable: set[str] = set()
    names: set[str] = set()
    for document in documents:
        names.update(e.model_name for e in (*document.entries, *document.deleted))
        for entry in document.entries:
            reachable.update(objects.references(entry))
    result = GcPlan(sources=sources, models=sorted(names))
    for info in _listing(objects, prefix, result.models):
        result.scanned += 1
        if info.key in reachable:
            result.referenced += 1
        elif info.modified is None or info.modified >= cutoff:
            result.young += 1
        else:
            result.candidates.append(info)
    return result


def collect(objects: Objects, plan: GcPlan) -> GcOutcome:
    """Delete the plan's objects, each only if it is unchanged since the plan was made."""
    outcome = GcOutcome()
    for info in plan.candidates:
        try:
            now = objects.backend.stat(info.key)
        except ObjectNotFoundError:
            continue
        if now.modified != info.modified or now.size != info.size:
            outcome.kept.append(info.key)  # reused (touched) or rewritten meanwhile
            continue
        objects.backend.delete(info.key)
        outcome.deleted.append(info)
    return outcome


def _listing(objects: Objects, prefix: str, models: Iterable[str]) -> Iterator[ObjectInfo]:
    for model in models:
        yield from objects.backend.list(model_folder(prefix, model))


def reachable_documents(
    git: GitRepo, working_file: Path
) -> tuple[list[str], list[MetadataDocument]]:
    """The metadata as every ref, the index and the working tree have it (each distinct
    content read once). A version any of them reaches must keep its bytes."""
    refs = [
        line
        for line in git.run_bytes(
            "for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags", "refs/remotes"
        )
        .decode()
        .splitlines()
        if line and not line.endswith("/HEAD")
    ]
    refs += ["HEAD", "MERGE_HEAD"]  # a ref that does not exist is reported missing
    specs = [f"{ref}:{METADATA_FILENAME}" for ref in refs]
    specs += [f":{stage}:{METADATA_FILENAME}" for stage in (0, 1, 2, 3)]
    checked = git.run_bytes(
        "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(specs).encode()
    )
    blobs: dict[str, str] = {}
    for spec, line in zip(specs, checked.decode().splitlines(), strict=True):
        sha, _, kind = line.partition(" ")
        if kind == "blob":
            blobs.setdefault(sha, spec.rsplit(":", 1)[0] or "index")
    sources = [f"{name} ({sha[:7]})" for sha, name in blobs.items()]
    documents = [
        _lenient(data, f"{blobs[sha]}:{METADATA_FILENAME}")
        for sha, data in _read_blobs(git, list(blobs))
    ]
    if working_file.is_file():
        sources.append("the working tree")
        documents.append(_lenient(working_file.read_bytes(), str(working_file)))
    return sources, documents


def _read_blobs(git: GitRepo, shas: list[str]) -> Iterator[tuple[str, bytes]]:
    out = git.run_bytes("cat-file", "--batch", stdin="\n".join(shas).encode())
    position = 0
    for sha in shas:
        header_end = out.index(b"\n", position)
        size = int(out[position:header_end].split()[2])
        start = header_end + 1
        yield sha, out[start : start + size]
        position = start + size + 1


def _lenient(data: bytes, source: str) -> MetadataDocument:
    """A conflicted file still names what both of its sides reach."""
    if CONFLICT_START not in data:
        return read_side(data, source)
    ours, theirs, _ = split_markers(data)
    a, b = read_side(ours, source), read_side(theirs, source)
    return MetadataDocument(entries=[*a.entries, *b.entries], deleted=[*a.deleted, *b.deleted])
