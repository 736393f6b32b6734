"""The web pages: server-rendered HTML, forms that work without JavaScript.

With a token file, a browser signs in once with its token (kept in an HttpOnly,
SameSite=Strict cookie); without one, the pages are read-only for everyone. A form's
change goes through the same desk as the API's, then the browser is sent back to the
page it came from with what happened (post, redirect, get).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from control_plane.core.errors import NexusError, UnauthorizedError
from control_plane.registry.lifecycle import APPROVED, ARCHIVED, PRODUCTION, REJECTED, STAGING
from control_plane.registry.resolve import resolve_ref, validate_model_name
from control_plane.web import charts, views
from control_plane.web.changes import Action, Actor
from control_plane.web.errors import sentence, status_of
from control_plane.web.roles import Role, allows
from control_plane.web.state import COOKIE, RegistryState, presented_token

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
METRIC_COLUMNS = 6  # metrics shown as columns: the ones most versions on the page have
EVENTS_SHOWN = 500


class Offer:
    """A button on a version's row."""

    def __init__(self, kind: str, label: str, stage: str | None = None) -> None:
        self.kind, self.label, self.stage = kind, label, stage


router = APIRouter(include_in_schema=False)


def _state(request: Request) -> RegistryState:
    return request.app.state.registry  # type: ignore[no-any-return]


def who(request: Request) -> Actor | None:
    try:
        return _state(request).actor(presented_token(request))
    except UnauthorizedError:
        return None


def needs_sign_in(request: Request) -> bool:
    return _state(request).tokens is not None and who(request) is None


def render(request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
    context = {
        "actor": who(request),
        "read_only": _state(request).tokens is None,
        "done": request.query_params.get("done"),
        **context,
    }
    return TEMPLATES.TemplateResponse(request, template, context, status_code=code)


def to_sign_in(request: Request) -> RedirectResponse:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/login?next={target}", status_code=303)


def failed(request: Request, exc: NexusError) -> HTMLResponse:
    status = status_of(exc)
    return render(request, "error.html", code=status, heading=status, error=sentence(exc))


@router.get("/", name="models_page")
def models_page(request: Request) -> Response:
    if needs_sign_in(request):
        return to_sign_in(request)
    return render(request, "models.html", models=views.models(_state(request).document()))


@router.get("/models/{model}", name="model_page")
def model_page(request: Request, model: str, page: int = 1, metric: str = "") -> Response:
    if needs_sign_in(request):
        return to_sign_in(request)
    try:
        validate_model_name(model)
        document = _state(request).document()
        views.find_model(document, model)
    except NexusError as exc:
        return failed(request, exc)
    actor = who(request)
    versions = document.versions(model)  # file order: oldest first
    newest_first = versions[::-1]
    size = _state(request).settings.page_size
    pages_count = max(1, math.ceil(len(newest_first) / size))
    page = min(max(1, page), pages_count)
    rows = [views.version_row(e) for e in newest_first[(page - 1) * size : page * size]]
    metric_names = _metric_names(versions)
    chosen = metric if metric in metric_names else (metric_names[0] if metric_names else "")
    points = [
        (views.version_number(e) or i + 1, float(e.metrics[chosen]), e.label)
        for i, e in enumerate(versions)
        if e.metrics and isinstance(e.metrics.get(chosen), int | float)
    ]
    return render(
        request,
        "model.html",
        summary=views.model_summary(document, model),
        rows=rows,
        columns=_columns(rows),
        metric_names=metric_names,
        metric=chosen,
        chart=charts.metric_chart(points, chosen) if chosen else "",
        page=page,
        pages=pages_count,
        here=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        actions_for=lambda row: _offers(actor, row),
    )


@router.get("/models/{model}/versions/{ref}", name="version_page")
def version_page(request: Request, model: str, ref: str) -> Response:
    if needs_sign_in(request):
        return to_sign_in(request)
    try:
        validate_model_name(model)
        document = _state(request).document()
        entry = resolve_ref(document, ref, model)
    except NexusError as exc:
        return failed(request, exc)
    detail = views.version_detail(document, entry)
    labels = {
        (e.model_name, e.commit_hash): f"{e.model_name} "
        + (f"v{views.version_number(e)}" if views.version_number(e) else e.short_hash)
        for e in document.entries
    }
    shown = ("commit_hash", "timestamp", "file_size", "sha256", "format", "storage_uri",
             "author", "message", "owner", "base_model", "training_data", "metrics", "params",
             "tags", "status_reason")  # fmt: skip
    fields = [
        (k, detail["entry"][k]) for k in shown if detail["entry"].get(k) not in (None, {}, "")
    ]
    return render(
        request,
        "version.html",
        v=detail,
        fields=fields,
        lineage=charts.lineage_graph(detail["lineage"], labels),
        can_alias=allows(_role(who(request)), "alias"),
        here=str(request.url.path),
    )


@router.get("/audit", name="audit_page")
def audit_page(request: Request, model: str = "", kind: str = "", who: str = "") -> Response:
    if needs_sign_in(request):
        return to_sign_in(request)
    document = _state(request).document()
    names = views.model_names(document)
    asked = views.AuditQuery(
        model=model or None, kind=kind if kind in views.AUDIT_KINDS else None, who=who or None
    )
    try:
        events = views.audit(document, asked)
    except NexusError as exc:
        return failed(request, exc)
    now = datetime.now(UTC)
    shown = [model] if model else names
    timelines = [
        (name, charts.timeline(views.production_timeline(document, name), now)) for name in shown
    ]
    return render(
        request,
        "audit.html",
        model_names=names,
        kinds=views.AUDIT_KINDS,
        query=asked,
        timelines=timelines,
        events=events[::-1][:EVENTS_SHOWN],
        truncated=len(events) > EVENTS_SHOWN,
    )


@router.post("/models/{model}/versions/{ref}/{kind}", name="act")
def act(
    request: Request,
    model: str,
    ref: str,
    kind: str,
    next: str = Form("/"),
    stage: str | None = Form(None),
    reason: str | None = Form(None),
    alias: str | None = Form(None),
) -> Response:
    back = next if _local(next) else "/"
    if not _same_origin(request):
        refused = "a form from another site was refused."
        return render(request, "error.html", code=403, heading=403, error=refused)
    if needs_sign_in(request):
        return to_sign_in(request)
    if kind not in (
        "promote",
        "archive",
        "rollback",
        "approve",
        "reject",
        "alias",
        "unalias",
        "delete",
    ):
        return render(request, "error.html", code=404, heading=404, error=f"no action '{kind}'.")
    action = Action(kind, model, ref, stage=stage, reason=reason, alias=alias)
    try:
        validate_model_name(model)
        outcome = _state(request).apply(action, who(request))
    except NexusError as exc:
        return failed(request, exc)
    said = outcome.message if outcome.commit else f"{outcome.message}: nothing to change"
    glue = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{glue}done={quote(said)}", status_code=303)


@router.get("/login", name="login_form")
def login_form(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", next=next if _local(next) else "/")


@router.post("/login", name="login")
def login(request: Request, token: str = Form(...), next: str = Form("/")) -> Response:
    try:
        actor = _state(request).actor(token.strip())
    except UnauthorizedError:
        return render(request, "login.html", code=401, next=next, error="that token is not valid.")
    if actor is None:  # read-only: nobody signs in
        return RedirectResponse("/", status_code=303)
    response = RedirectResponse(next if _local(next) else "/", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict")
    return response


@router.post("/logout", name="logout")
def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _role(actor: Actor | None) -> Role | None:
    return actor.role if actor is not None else None


def _offers(actor: Actor | None, row: dict[str, Any]) -> list[Offer]:
    """The buttons `actor` may press on `row` (none that would change nothing)."""
    if actor is None:
        return []
    offers = []
    if row["stage"] != STAGING:
        offers.append(Offer("promote", "Staging", STAGING))
    if row["stage"] != PRODUCTION:
        offers.append(Offer("promote", "Production", PRODUCTION))
    if row["status"] != APPROVED:
        offers.append(Offer("approve", "Approve"))
    if row["status"] != REJECTED:
        offers.append(Offer("reject", "Reject"))
    if not row["is_latest"]:
        offers.append(Offer("rollback", "Make latest"))
    if row["stage"] != ARCHIVED:
        offers.append(Offer("archive", "Archive"))
    offers.append(Offer("delete", "Delete"))
    return [o for o in offers if allows(actor.role, o.kind, o.stage)]


def _metric_names(versions: list[Any]) -> list[str]:
    counts: dict[str, int] = {}
    for entry in versions:
        for name, value in (entry.metrics or {}).items():
            if isinstance(value, int | float):
                counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    counts: dict[str, int] = {}
    for row in rows:
        for name in row["metrics"]:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))[:METRIC_COLUMNS]


def _local(target: str) -> bool:
    """Only paths on this server: a `next` pointing elsewhere is an open redirect."""
    parts = urlsplit(target)
    return (
        not parts.scheme
        and not parts.netloc
        and target.startswith("/")
        and not target.startswith("//")
    )


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    return urlsplit(origin).netloc == request.headers.get("host", "")
