"""Turning what users type into versions: model names, `latest`, stages, commit prefixes."""

from __future__ import annotations

import re

from control_plane.core.errors import AmbiguousRefError, NotFoundError, UsageError
from control_plane.metadata import MetadataDocument, ModelEntry
from control_plane.registry import lifecycle

_MODEL_NAME = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,128}$")
_COMMIT_REF = re.compile(r"^[0-9a-f]{4,40}$")


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name) or name in {".", ".."}:
        raise UsageError(
            f"'{name}' is not a valid model name.",
            hint="use 1-128 letters, digits, '.', '_' or '-', not starting with '.'",
        )
    return name


def model_versions(document: MetadataDocument, model_name: str) -> list[ModelEntry]:
    """The model's versions; NotFoundError when the name is valid but nothing is stored."""
    validate_model_name(model_name)
    versions = document.versions(model_name)
    if not versions:
        raise NotFoundError(
            f"no model named '{model_name}' is stored.",
            hint="run 'nexus list' to see the stored models",
        )
    return versions


def resolve_ref(document: MetadataDocument, ref: str, model_name: str | None) -> ModelEntry:
    """`latest`, a stage, a full commit hash or a unique prefix of 4+ hex characters."""
    entries = document.entries if model_name is None else model_versions(document, model_name)
    if not entries:
        raise NotFoundError("no models are stored yet.", hint="run 'nexus store PATH MODEL_NAME'")
    if ref in lifecycle.STAGES:
        return _resolve_stage(entries, ref, model_name)
    if ref == "latest":
        names = sorted({e.model_name for e in entries})
        if len(names) > 1:
            raise AmbiguousRefError(
                f"'latest' is ambiguous: {len(names)} models are stored ({', '.join(names)}).",
                hint="pass --model-name (NEXUS_MODEL_NAME for the model server)",
            )
        flagged = [e for e in entries if e.is_latest] or entries
        return max(flagged, key=lambda e: e.created)
    needle = ref.lower()
    if not _COMMIT_REF.match(needle):
        raise UsageError(
            f"'{ref}' is not a version reference.",
            hint="use 'latest', a commit hash, or a unique prefix of at least 4 hex characters",
        )
    matches = [
        e
        for e in entries
        if e.commit_hash.lower().startswith(needle)
        or (len(e.commit_hash) >= 4 and needle.startswith(e.commit_hash.lower()))
    ]
    if not matches:
        scope = f"model '{model_name}' has" if model_name else "there is"
        raise NotFoundError(
            f"{scope} no version at '{ref}'.",
            hint=f"run 'nexus list{' --model-name ' + model_name if model_name else ''}' "
            "to see the versions",
        )
    if len(matches) > 1:
        shown = ", ".join(e.model_name + "@" + e.commit_hash[:12] for e in matches[:10])
        raise AmbiguousRefError(
            f"'{ref}' matches {len(matches)} versions: {shown}.",
            hint="use more characters of the hash" + ("" if model_name else " or --model-name"),
        )
    return matches[0]


def _resolve_stage(entries: list[ModelEntry], stage: str, model_name: str | None) -> ModelEntry:
    holders = [e for e in entries if e.stage == stage]
    names = sorted({e.model_name for e in holders})
    if len(names) > 1:
        raise AmbiguousRefError(
            f"'{stage}' is ambiguous: {len(names)} models have a {stage} version "
            f"({', '.join(names)}).",
            hint="pass --model-name",
        )
    if not holders:
        scope = f"model '{model_name}' has" if model_name else "no model has"
        raise NotFoundError(
            f"{scope} no version in {stage}.",
            hint=f"run 'nexus promote REF MODEL --stage {stage}'",
        )
    return max(holders, key=lambda e: e.created)


def find_version(document: MetadataDocument, model_name: str, commit: str) -> ModelEntry | None:
    return next((e for e in document.versions(model_name) if e.commit_hash == commit), None)
