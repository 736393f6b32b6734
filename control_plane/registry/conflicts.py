"""Merging `.nexus_meta.json` in Git: the merge driver, and `nexus resolve` for when a tool
merged the file as text anyway (a forge, a clone without the driver, a merge by hand).

The driver is declared in `.gitattributes` (committed, so every clone has it) and
defined in the clone's own `.git/config`, which Git never transfers: every nexus
write and `nexus init` define it. It runs this interpreter, so it works whether or
not `nexus` is on the PATH of whoever runs `git merge`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from control_plane.core.errors import GitError, MetadataError, NexusError
from control_plane.metadata import METADATA_FILENAME, MetadataDocument, MetadataFile, atomic_write
from control_plane.metadata.document import CONFLICT_START, consistency_problem, parse_raw
from control_plane.registry.dotfiles import ensure_line
from control_plane.registry.merge import MergeResult, merge

if TYPE_CHECKING:
    from control_plane.registry.git import GitRepo  # gitpython is slow to import

DRIVER = "nexus"
ATTRIBUTE = f"{METADATA_FILENAME} merge={DRIVER}"


def driver_command() -> str:
    """`%O %A %B`: ancestor, ours (the result goes here), theirs; `%P`: the path, for messages."""
    return f"{shlex.quote(sys.executable)} -m control_plane.launcher merge-driver %O %A %B %P"


def install_driver(root: Path, git: GitRepo) -> bool:
    """Declare and define the merge driver; True if anything had to change."""
    changed = ensure_line(root / ".gitattributes", ATTRIBUTE)
    if git.config_get(f"merge.{DRIVER}.driver") != driver_command():
        git.config_set(f"merge.{DRIVER}.name", "nexus: merge .nexus_meta.json by its history")
        git.config_set(f"merge.{DRIVER}.driver", driver_command())
        changed = True
    return changed


def read_side(data: bytes, source: str) -> MetadataDocument:
    """One side of a merge; an empty file (added on both branches: no ancestor) is empty."""
    if not data.strip():
        return MetadataDocument()
    return parse_raw(data, Path(source))


def run_driver(base: str, ours: str, theirs: str, label: str = METADATA_FILENAME) -> int:
    """Git's merge driver: the merged file replaces OURS (exit 0); on an error, one line on
    stderr and exit 1, which leaves Git's conflict for `nexus resolve`."""
    try:
        result = merge_files(Path(base), Path(ours), Path(theirs))
        atomic_write(Path(ours), result.document.to_bytes())
    except NexusError as exc:
        sys.stderr.write(f"nexus: {label}: {exc.message} Run 'nexus resolve'.\n")
        return 1
    for note in result.notes:
        sys.stderr.write(f"nexus: {label}: {note}\n")
    return 0


def merge_files(base: Path, ours: Path, theirs: Path) -> MergeResult:
    """What the driver does: merge three files, the result in memory."""
    return merge(
        read_side(base.read_bytes(), str(base)) if base.stat().st_size else None,
        read_side(ours.read_bytes(), str(ours)),
        read_side(theirs.read_bytes(), str(theirs)),
    )


@dataclass(frozen=True)
class ConflictInputs:
    """What `nexus resolve` merges, and where it found it (for the message)."""

    base: MetadataDocument | None
    ours: MetadataDocument
    theirs: MetadataDocument
    source: str


def find_conflict(path: Path, git: GitRepo | None) -> ConflictInputs | None:
    """The two sides (and ancestor) of a conflicted metadata file; None if it is not.

    In order: Git's conflict stages in the index (exactly what the driver would have
    been given), conflict markers in the file (with the ancestor where the markers
    carry it, diff3 style), a valid file breaking the registry's rules (a hand merge:
    its duplicates are merged with each other).
    """
    if git is not None:
        stages = _index_stages(git, path)
        if stages is not None:
            return stages
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if any(line.startswith(CONFLICT_START) for line in data.split(b"\n")):
        ours, theirs, base = split_markers(data)
        return ConflictInputs(
            read_side(base, f"{path} (ancestor)") if base else None,
            read_side(ours, f"{path} (ours)"),
            read_side(theirs, f"{path} (theirs)"),
            "the conflict markers in the file",
        )
    document = parse_raw(data, path)
    if consistency_problem(document) is None:
        return None
    return ConflictInputs(None, document, MetadataDocument(), "the file's own duplicates")


def _index_stages(git: GitRepo, path: Path) -> ConflictInputs | None:
    listing = git.run_bytes("ls-files", "-u", "-z", "--", path.name, check=False)
    blobs: dict[str, str] = {}
    for record in listing.split(b"\0"):
        if b"\t" in record:
            mode_sha_stage, _ = record.split(b"\t", 1)
            _, sha, stage = mode_sha_stage.decode().split()
            blobs[stage] = sha
    if "2" not in blobs or "3" not in blobs:
        return None
    sides = {
        stage: read_side(git.run_bytes("cat-file", "blob", sha), f"{path} (stage {stage})")
        for stage, sha in blobs.items()
    }
    return ConflictInputs(sides.get("1"), sides["2"], sides["3"], "Git's conflict stages")


def split_markers(data: bytes) -> tuple[bytes, bytes, bytes | None]:
    """(ours, theirs, ancestor or None) from a text merge's conflict markers."""
    ours: list[bytes] = []
    theirs: list[bytes] = []
    base: list[bytes] = []
    every_block_has_base = True
    section = None
    for line in data.splitlines(keepends=True):
        if line.startswith(CONFLICT_START):
            section, has_base = "ours", False
            continue
        if section is not None and line.startswith(b"||||||| "):
            section, has_base = "base", True
            continue
        if section is not None and line.rstrip(b"\r\n") == b"=======":
            section = "theirs"
            continue
        if section is not None and line.startswith(b">>>>>>> "):
            every_block_has_base = every_block_has_base and has_base
            section = None
            continue
        if section is None:
            ours.append(line)
            theirs.append(line)
            base.append(line)
        else:
            {"ours": ours, "theirs": theirs, "base": base}[section].append(line)
    if section is not None:
        raise MetadataError(f"{METADATA_FILENAME} has a conflict block that never ends.")
    return b"".join(ours), b"".join(theirs), b"".join(base) if every_block_has_base else None


def resolve_conflicted(
    metadata: MetadataFile, git: Callable[[], GitRepo], prepare: Callable[[], None]
) -> tuple[ConflictInputs, MergeResult] | None:
    """Merge a conflicted (or hand-merged) metadata file by the driver's rules and write it
    (`prepare` readies the workspace first); None when there is nothing to resolve."""
    try:
        repo: GitRepo | None = git()
    except GitError:
        repo = None
    inputs = find_conflict(metadata.path, repo)
    if inputs is None:
        return None
    result = merge(inputs.base, inputs.ours, inputs.theirs)
    prepare()
    metadata.replace(result.document)
    return inputs, result
