"""Turning what users type into versions: model names, `latest`, stages, commit prefixes."""

from __future__ import annotations

import re

from control_plane.core.errors import AmbiguousRefError, NotFoundError, UsageError
from control_plane.metadata import MetadataDocument, ModelEntry
from control_plane.registry import lifecycle

MODEL_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"  # 1-128, not starting with '.'
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_COMMIT_REF = re.compile(r"^[0-9a-f]{4,40}$")
_VERSION_REF = re.compile(r"^v([1-9][0-9]{0,8})$")
_ALIAS = re.compile(ALIAS_PATTERN)
RESERVED_REFS = ("latest", *lifecycle.STAGE_VALUES)


def is_moving_ref(ref: str) -> bool:
    """Whether what `ref` names can change: latest, a stage, an alias (as opposed to a version
    number or a commit, which name one version for good). `MODEL@REF` as `REF`."""
    ref = ref.partition("@")[2] if "@" in ref else ref
    return not (_VERSION_REF.match(ref) or _COMMIT_REF.match(ref.lower()))


def validate_alias(name: str) -> str:
    """An alias may not read as any other kind of REF."""
    if (
        not _ALIAS.match(name)
        or name in RESERVED_REFS
        or _VERSION_REF.match(name)
        or _COMMIT_REF.match(name.lower())
    ):
        raise UsageError(
            f"'{name}' cannot be an alias.",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter; not "
            "latest, a stage, v<number>, or something that reads as a commit hash",
        )
    return name


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
    """`latest`, a stage, `v3`, an alias, a full commit hash or a unique prefix of 4+ hex
    characters; any of them as `MODEL@REF`."""
    model, at, rest = ref.partition("@")
    if at:
        if model_name is not None and model != model_name:
            raise UsageError(f"'{ref}' names model '{model}', but --model-name is '{model_name}'.")
        model_name, ref = model, rest or "latest"
    entries = document.entries if model_name is None else model_versions(document, model_name)
    if not entries:
        raise NotFoundError("no models are stored yet.", hint="run 'nexus store PATH MODEL_NAME'")
    if ref in lifecycle.STAGES:
        return _resolve_stage(entries, ref, model_name)
    if ref == "latest":
        _one_model(entries, ref)
        flagged = [e for e in entries if e.is_latest] or entries
        return max(flagged, key=lambda e: e.created)
    number = _VERSION_REF.match(ref)
    if number:
        _one_model(entries, ref)
        wanted = int(number.group(1))
        found = next((e for e in entries if e.data.get("version") == wanted), None)
        if found is None:
            raise NotFoundError(
                f"model '{entries[0].model_name}' has no version {ref}.",
                hint=f"run 'nexus list --model-name {entries[0].model_name}' to see the versions",
            )
        return found
    needle = ref.lower()
    if not _COMMIT_REF.match(needle):
        return _resolve_alias(entries, ref, model_name)
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


def _one_model(entries: list[ModelEntry], ref: str) -> None:
    names = sorted({e.model_name for e in entries})
    if len(names) > 1:
        raise AmbiguousRefError(
            f"'{ref}' is ambiguous: {len(names)} models are stored ({', '.join(names)}).",
            hint="pass --model-name (NEXUS_MODEL_NAME for the model server), or write MODEL@" + ref,
        )


def _resolve_alias(entries: list[ModelEntry], alias: str, model_name: str | None) -> ModelEntry:
    if not _ALIAS.match(alias):
        raise UsageError(
            f"'{alias}' is not a version reference.",
            hint="use 'latest', a stage, v<number>, an alias, a commit hash, or a unique "
            "prefix of at least 4 hex characters",
        )
    holders = [e for e in entries if alias in (e.data.get("aliases") or ())]
    if not holders:
        scope = f"model '{model_name}' has no" if model_name else "no model has a"
        raise NotFoundError(
            f"{scope} version or alias '{alias}'.",
            hint="run 'nexus alias list' to see the aliases",
        )
    _one_model(holders, alias)
    return holders[0]


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
