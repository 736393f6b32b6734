"""`/api/v1`: the registry as JSON, with its OpenAPI document at `/api/v1/openapi.json`.

Reads need a token once the server has a token file (none without one); changes need
the role `roles.py` names. Errors are `{"error": "<one sentence>"}` with 401, 403, 404,
409 (the change conflicts with the registry's state) or 422 (bad input).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from control_plane.core.errors import ConflictError, NexusError, UsageError
from control_plane.registry import query
from control_plane.registry.resolve import (
    ALIAS_PATTERN,
    MODEL_NAME_PATTERN,
    resolve_ref,
    validate_alias,
)
from control_plane.web import views
from control_plane.web.changes import Action, Actor, Outcome
from control_plane.web.state import RegistryState, presented_token


class ErrorBody(BaseModel):
    error: str = Field(description="one sentence: what was wrong")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "the body is not JSON"),
        (401, "no valid token"),
        (403, "the token's role does not allow it"),
        (404, "no such model or version"),
        (409, "the change conflicts with the registry's state"),
        (422, "bad input"),
    )
}


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelSummary(BaseModel):
    name: str
    versions: int
    latest: str | None
    staging: str | None
    production: str | None
    last_change: str | None


class VersionRow(BaseModel):
    model: str
    version: int | None
    commit_hash: str
    short_hash: str
    label: str
    timestamp: str | None
    stage: str | None
    status: str | None
    is_latest: bool
    aliases: list[str]
    metrics: dict[str, Any]
    tags: dict[str, Any]
    owner: str | None
    file_size: int | None
    signed: bool
    signed_approval: bool


class VersionDetail(VersionRow):
    entry: dict[str, Any]
    lineage: dict[str, Any]
    history: list[dict[str, Any]]
    signature: dict[str, Any] | None
    approval: dict[str, Any] | None
    load_command: str


class AuditEvent(Loose):
    model: str
    commit_hash: str
    what: str | None = None
    who: str | None = None
    when: str | None = None


class Span(BaseModel):
    commit_hash: str
    label: str
    from_: str | None = Field(alias="from")
    until: str | None
    by: str | None


class ActionResult(BaseModel):
    version: VersionRow
    message: str
    commit: str | None = Field(description="the commit made; null when nothing changed")
    pushed: bool


class PromoteBody(BaseModel):
    stage: Literal["staging", "production"]


class RejectBody(BaseModel):
    # Something besides whitespace, as the registry's str.strip() sees it: that counts the
    # separators \x1c-\x1f as whitespace, which Unicode's (the schema's \s) does not.
    reason: str = Field(min_length=1, max_length=2000, pattern=r"[^\s\x1c-\x1f]")


REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


def _iso_only(value: Any) -> Any:
    """A date or an ISO 8601 moment, not a number of seconds (pydantic takes both)."""
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("expected a date or an ISO 8601 date and time, e.g. 2026-01-31T12:00Z")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_only)]

Model = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="the model's name")]
Ref = Annotated[
    str, Path(pattern=REF_PATTERN, description="v3, latest, a stage, an alias, a commit prefix")
]
Alias = Annotated[str, Path(pattern=ALIAS_PATTERN)]
Stage = Literal["staging", "production", "archived"]  # lifecycle.STAGE_VALUES
Status = Literal["pending_review", "approved", "rejected"]  # lifecycle.STATUSES


class AliasBody(BaseModel):
    ref: str = Field(pattern=REF_PATTERN, description="the version: v3, a hash, a stage")


router = APIRouter(responses=ERRORS)


def _state(request: Request) -> RegistryState:
    return request.app.state.registry  # type: ignore[no-any-return]


RegistryDep = Annotated[RegistryState, Depends(_state)]


def _reader(request: Request) -> Actor | None:
    """Who is asking (see `RegistryState.actor`): the dependency every route takes."""
    return _state(request).actor(presented_token(request))


reader = Depends(_reader)


def _result(outcome: Outcome) -> ActionResult:
    row = VersionRow(**views.version_row(outcome.entry))
    return ActionResult(
        version=row, message=outcome.message, commit=outcome.commit, pushed=outcome.pushed
    )


@router.get("/models", response_model=list[ModelSummary], summary="Every model")
def list_models(state: RegistryDep, _: Actor | None = reader) -> list[dict[str, Any]]:
    return views.models(state.document())


@router.get("/versions", response_model=list[VersionRow], summary="Versions, filtered")
def list_versions(
    state: RegistryDep,
    _: Actor | None = reader,
    model: Annotated[str | None, Query(pattern=MODEL_NAME_PATTERN)] = None,
    stage: Stage | None = None,
    status: Status | None = None,
    metric: Annotated[
        list[Annotated[str, Field(pattern=query.METRIC_PATTERN)]] | None,
        Query(description="NAME OP NUMBER, e.g. accuracy>=0.9; repeatable"),
    ] = None,
    tag: Annotated[
        list[Annotated[str, Field(pattern=r"^[^=]+=.*$")]] | None,
        Query(description="KEY=VALUE; repeatable"),
    ] = None,
    owner: Annotated[str | None, Query(max_length=256)] = None,
    base_model: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[Moment | None, Query(description="stored at or after")] = None,
    sort: Annotated[
        str | None, Query(pattern=query.METRIC_NAME_PATTERN, description="a metric")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> list[dict[str, Any]]:
    """The filters of `nexus list`: newest first, or by a metric, highest first."""
    filters = [
        *([query.stage(stage)] if stage else []),
        *([query.status(status)] if status else []),
        *([query.owner(owner)] if owner else []),
        *([query.base_model(base_model)] if base_model else []),
        *([query.since(since.isoformat())] if since else []),
        *(query.tag(t) for t in tag or []),
        *(query.metric(m) for m in metric or []),
    ]
    document = state.document()
    if model is not None:
        views.find_model(document, model)
    entries = query.select(document.entries, model, filters, sort_metric=sort, limit=limit)
    return [views.version_row(e) for e in entries]


@router.get(
    "/models/{model}/versions/{ref}",
    response_model=VersionDetail,
    summary="One version in full",
)
def show_version(
    state: RegistryDep, model: Model, ref: Ref, _: Actor | None = reader
) -> dict[str, Any]:
    """Metadata, lineage, history, signature and approval, and the `nexus load` command."""
    document = state.document()
    return views.version_detail(document, resolve_ref(document, ref, model))


@router.get("/models/{model}/timeline", response_model=list[Span], summary="Production over time")
def timeline(state: RegistryDep, model: Model, _: Actor | None = reader) -> list[dict[str, Any]]:
    """Which version held production when, oldest first (`until` null: it still does)."""
    document = state.document()
    views.find_model(document, model)
    return views.production_timeline(document, model)


@router.get("/audit", response_model=list[AuditEvent], summary="The audit log")
def audit(
    state: RegistryDep,
    _: Actor | None = reader,
    model: Annotated[str | None, Query(pattern=MODEL_NAME_PATTERN)] = None,
    kind: Annotated[
        Literal["stored", "stage", "status", "latest", "alias", "deleted", "signature", "approval"]
        | None,
        Query(description="the event's `what`"),
    ] = None,
    who: Annotated[str | None, Query(max_length=256, description="part of the name")] = None,
    since: Moment | None = None,
    until: Moment | None = None,
) -> list[dict[str, Any]]:
    """Every recorded change of every model, oldest first."""
    asked = views.AuditQuery(model, kind, who, _aware(since), _aware(until))
    return views.audit(state.document(), asked)


@router.get(
    "/models/{model}/refs/{ref}/watch",
    response_class=StreamingResponse,
    summary="A ref's changes, as Server-Sent Events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "the stream"}},
)
async def watch(
    state: RegistryDep,
    model: Model,
    ref: Ref,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
    _: Actor | None = reader,
) -> StreamingResponse:
    """`event: version`, `data: {"ref", "entry"}` (the version the ref names, in full, or
    null) at once and whenever it changes; `id` is the metadata's newest history seq, so
    a client that reconnects with `Last-Event-ID` gets the state if it moved meanwhile.
    A comment line every 15 s keeps idle connections open; the stream ends when the
    client leaves or the server stops (the client reconnects to the next one)."""
    views.find_model(await asyncio.to_thread(state.document), model)

    async def over() -> bool:
        return state.stopping() or await request.is_disconnected()

    return StreamingResponse(
        watch_ref(state, model, ref, last_event_id, over),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _change(state: RegistryState, action: Action, actor: Actor | None) -> ActionResult:
    return _result(state.apply(action, actor))


@router.post("/models/{model}/versions/{ref}/promote", response_model=ActionResult)
def promote(
    state: RegistryDep, model: Model, ref: Ref, body: PromoteBody, actor: Actor | None = reader
) -> ActionResult:
    """Give the version a stage (staging: maintainer; production: approver)."""
    return _change(state, Action("promote", model, ref, stage=body.stage), actor)


@router.post("/models/{model}/versions/{ref}/archive", response_model=ActionResult)
def archive(
    state: RegistryDep, model: Model, ref: Ref, actor: Actor | None = reader
) -> ActionResult:
    """Retire the version (maintainer)."""
    return _change(state, Action("archive", model, ref), actor)


@router.post("/models/{model}/versions/{ref}/approve", response_model=ActionResult)
def approve(
    state: RegistryDep, model: Model, ref: Ref, actor: Actor | None = reader
) -> ActionResult:
    """Approve the version (approver)."""
    return _change(state, Action("approve", model, ref), actor)


@router.post("/models/{model}/versions/{ref}/reject", response_model=ActionResult)
def reject(
    state: RegistryDep, model: Model, ref: Ref, body: RejectBody, actor: Actor | None = reader
) -> ActionResult:
    """Reject the version, with a reason (approver)."""
    return _change(state, Action("reject", model, ref, reason=body.reason), actor)


@router.post("/models/{model}/versions/{ref}/rollback", response_model=ActionResult)
def rollback(
    state: RegistryDep, model: Model, ref: Ref, actor: Actor | None = reader
) -> ActionResult:
    """Make the version the latest again (maintainer)."""
    return _change(state, Action("rollback", model, ref), actor)


@router.delete("/models/{model}/versions/{ref}", response_model=ActionResult)
def delete(
    state: RegistryDep, model: Model, ref: Ref, force: bool = False, actor: Actor | None = reader
) -> ActionResult:
    """Delete the version from the metadata (admin); `force` for one holding a stage."""
    return _change(state, Action("delete", model, ref, force=force), actor)


@router.put("/models/{model}/aliases/{alias}", response_model=ActionResult)
def set_alias(
    state: RegistryDep,
    model: Model,
    alias: Alias,
    body: Annotated[AliasBody, Body()],
    actor: Actor | None = reader,
) -> ActionResult:
    """Point the alias at a version (maintainer). A name that reads as another ref
    (latest, a stage, v3, a commit prefix) is a conflict (409)."""
    _free_alias(alias)
    return _change(state, Action("alias", model, body.ref, alias=alias), actor)


@router.delete("/models/{model}/aliases/{alias}", response_model=ActionResult)
def remove_alias(
    state: RegistryDep, model: Model, alias: Alias, actor: Actor | None = reader
) -> ActionResult:
    """Remove the alias (maintainer)."""
    _free_alias(alias)
    return _change(state, Action("unalias", model, alias, alias=alias), actor)


WATCH_POLL_S = 0.2
KEEPALIVE_S = 15.0


async def watch_ref(
    state: RegistryState,
    model: str,
    ref: str,
    last_event_id: str | None,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The SSE stream of one ref (`ref_changes` as events); a comment while it is quiet."""
    generation = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    async for change in ref_changes(state, model, ref, generation, disconnected):
        if change is None:
            yield ": keep-alive\n\n"
        else:
            seq, payload = change
            yield f"id: {seq}\nevent: version\ndata: {payload}\n\n"


async def ref_changes(
    state: RegistryState,
    model: str,
    ref: str,
    generation: int | None,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[tuple[int, str] | None]:
    """What one ref names, as (generation, JSON payload): now (unless the client saw this
    generation), then at each change; None every `KEEPALIVE_S` of quiet. The SSE stream and
    the gRPC stream (`control_plane/web/grpc_updates.py`) both send these."""
    seen: tuple[int, str] | None = None
    document, quiet_since = None, time.monotonic()
    while not await disconnected():
        current = await asyncio.to_thread(state.document)
        if current is not document:
            document = current
            seq = views.generation(document)
            try:
                entry: dict[str, Any] | None = resolve_ref(document, ref, model).to_dict()
            except NexusError:
                entry = None  # not (or no longer) stored: the device keeps what it has
            payload = json.dumps({"model": model, "ref": ref, "entry": entry}, sort_keys=True)
            if seen is None and generation == seq:
                seen = (seq, payload)  # the client already has this generation
            if seen is None or seen[1] != payload:
                seen = (seq, payload)
                quiet_since = time.monotonic()
                yield seq, payload
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield None
        await asyncio.sleep(WATCH_POLL_S)


def _free_alias(alias: str) -> None:
    try:
        validate_alias(alias)
    except UsageError as exc:
        raise ConflictError(
            f"'{alias}' reads as another kind of ref, so it cannot be an alias."
        ) from exc


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.astimezone()
