"""The REST API over a real workspace: reads, changes as commits, errors as one sentence."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import get_args

import httpx

from control_plane import Registry
from control_plane.registry import lifecycle
from control_plane.web import api
from control_plane.web.settings import RegistrySettings
from tests.conftest import git
from tests.web.conftest import Team, asgi_client, head_commit


async def test_models_and_versions_are_listed_with_the_cli_filters(
    client: httpx.AsyncClient, team: Team
) -> None:
    reader = team.headers("reader")
    models = (await client.get("/api/v1/models", headers=reader)).json()
    assert [m["name"] for m in models] == ["bert", "resnet"]
    resnet = next(m for m in models if m["name"] == "resnet")
    assert resnet["versions"] == 3
    assert resnet["latest"].startswith("resnet v3")
    rows = (await client.get("/api/v1/versions", params={"model": "resnet"}, headers=reader)).json()
    assert [r["version"] for r in rows] == [3, 2, 1]
    good = (
        await client.get(
            "/api/v1/versions",
            params={"metric": "accuracy>=0.81", "sort": "accuracy"},
            headers=reader,
        )
    ).json()
    found = [(r["model"], r["version"]) for r in good]
    assert found[0] == ("resnet", 3)  # 0.82, then the two at 0.81
    assert set(found[1:]) == {("resnet", 2), ("bert", 2)}
    bad = await client.get("/api/v1/versions", params={"metric": "accuracy>>1"}, headers=reader)
    assert bad.status_code == 422
    assert set(bad.json()) == {"error"}


async def test_one_version_in_full(client: httpx.AsyncClient, team: Team) -> None:
    detail = (
        await client.get("/api/v1/models/resnet/versions/v2", headers=team.headers("reader"))
    ).json()
    assert detail["version"] == 2
    assert detail["metrics"]["accuracy"] == 0.81
    assert detail["entry"]["sha256"]
    assert detail["lineage"]["commit_hash"] == detail["commit_hash"]
    assert [e["what"] for e in detail["history"]][:1] == ["stored"]
    assert detail["load_command"] == "nexus load v2 ./resnet --model-name resnet"


async def test_reads_need_a_token_once_the_server_has_tokens(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/v1/models")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert "token is needed" in reply.json()["error"]
    wrong = await client.get("/api/v1/models", headers={"Authorization": "Bearer nxr_nope"})
    assert wrong.status_code == 401


async def test_a_promotion_is_one_commit_by_the_tokens_owner(
    client: httpx.AsyncClient, team: Team
) -> None:
    before = head_commit(team.repo)[0]
    reply = await client.post(
        "/api/v1/models/resnet/versions/v2/promote",
        json={"stage": "production"},
        headers=team.headers("approver"),
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    sha, author, subject = head_commit(team.repo)
    assert body["commit"] == sha != before
    assert author == "approver-person <approver@example.com>"
    assert subject.startswith("Promote resnet v2")
    assert "to production" in subject
    assert git(team.repo, "diff", "--name-only", before, sha).split() == [".nexus_meta.json"]
    assert git(team.repo, "status", "--porcelain", "--untracked-files=no") == ""
    entry = Registry(team.repo).resolve("production", "resnet")
    assert entry.data["version"] == 2
    assert (entry.history or [])[-1]["who"] == "approver-person <approver@example.com>"


async def test_errors_carry_the_status_a_rest_user_expects(
    client: httpx.AsyncClient, team: Team
) -> None:
    admin = team.headers("admin")
    missing = await client.get("/api/v1/models/resnet/versions/v9", headers=admin)
    assert missing.status_code == 404
    no_model = await client.get("/api/v1/models/nobody/timeline", headers=admin)
    assert no_model.status_code == 404
    bad_name = await client.get("/api/v1/models/..bad/versions/v1", headers=admin)
    assert bad_name.status_code == 422
    bad_stage = await client.post(
        "/api/v1/models/resnet/versions/v1/promote", json={"stage": "moon"}, headers=admin
    )
    assert bad_stage.status_code == 422
    assert "stage" in bad_stage.json()["error"]
    empty_reason = await client.post(
        "/api/v1/models/resnet/versions/v1/reject", json={"reason": "  "}, headers=admin
    )
    assert empty_reason.status_code == 422
    separator = await client.post(  # found by schemathesis: str.strip() takes it away
        "/api/v1/models/resnet/versions/v1/reject", json={"reason": "\x1d"}, headers=admin
    )
    assert separator.status_code == 422
    assert "reason" in separator.json()["error"]
    staged = await client.post(
        "/api/v1/models/resnet/versions/v1/promote", json={"stage": "production"}, headers=admin
    )
    assert staged.status_code == 200
    holds_stage = await client.delete("/api/v1/models/resnet/versions/v1", headers=admin)
    assert holds_stage.status_code == 409
    forced = await client.delete("/api/v1/models/resnet/versions/v1?force=true", headers=admin)
    assert forced.status_code == 200
    for reply in (missing, no_model, bad_name, bad_stage, holds_stage):
        assert set(reply.json()) == {"error"}
        assert reply.json()["error"].endswith((".", ")"))


async def test_a_change_that_changes_nothing_makes_no_commit(
    client: httpx.AsyncClient, team: Team
) -> None:
    maintainer = team.headers("maintainer")
    first = (
        await client.post("/api/v1/models/bert/versions/v1/archive", headers=maintainer)
    ).json()
    head = head_commit(team.repo)[0]
    again = (
        await client.post("/api/v1/models/bert/versions/v1/archive", headers=maintainer)
    ).json()
    assert first["commit"] == head
    assert again["commit"] is None
    assert head_commit(team.repo)[0] == head


async def test_aliases_reject_rollback_and_the_audit_log(
    client: httpx.AsyncClient, team: Team
) -> None:
    maintainer, approver = team.headers("maintainer"), team.headers("approver")
    assert (
        await client.put(
            "/api/v1/models/resnet/aliases/champion", json={"ref": "v1"}, headers=maintainer
        )
    ).status_code == 200
    assert Registry(team.repo).resolve("champion", "resnet").data["version"] == 1
    assert (
        await client.delete("/api/v1/models/resnet/aliases/champion", headers=maintainer)
    ).status_code == 200
    rejected = await client.post(
        "/api/v1/models/resnet/versions/v3/reject", json={"reason": "drifts"}, headers=approver
    )
    assert rejected.json()["version"]["status"] == "rejected"
    assert (
        await client.post("/api/v1/models/resnet/versions/v1/rollback", headers=maintainer)
    ).json()["version"]["is_latest"]
    events = (
        await client.get("/api/v1/audit", params={"model": "resnet"}, headers=maintainer)
    ).json()
    kinds = [e["what"] for e in events]
    assert kinds.count("stored") == 3
    assert {"alias", "status", "latest"} <= set(kinds)
    by_approver = (
        await client.get("/api/v1/audit", params={"who": "approver-person"}, headers=maintainer)
    ).json()
    assert [e["what"] for e in by_approver] == ["status"]
    assert by_approver[0]["reason"] == "drifts"
    status_only = (
        await client.get("/api/v1/audit", params={"kind": "status"}, headers=maintainer)
    ).json()
    assert {e["what"] for e in status_only} == {"status"}


async def test_the_production_timeline(client: httpx.AsyncClient, team: Team) -> None:
    approver = team.headers("approver")
    for ref in ("v1", "v2", "v3"):
        await client.post(
            f"/api/v1/models/resnet/versions/{ref}/promote",
            json={"stage": "production"},
            headers=approver,
        )
    spans = (await client.get("/api/v1/models/resnet/timeline", headers=approver)).json()
    assert [s["label"].split()[1] for s in spans] == ["v1", "v2", "v3"]
    assert [s["until"] is None for s in spans] == [False, False, True]
    handed_over = datetime.fromisoformat(spans[1]["from"]) - datetime.fromisoformat(
        spans[0]["until"]
    )
    assert timedelta(0) <= handed_over < timedelta(seconds=1)  # one write, two events


async def test_without_a_token_file_the_registry_is_read_only(team: Team) -> None:
    async with asgi_client(RegistrySettings(workspace=team.repo)) as client:
        assert (await client.get("/api/v1/models")).status_code == 200
        refused = await client.post("/api/v1/models/resnet/versions/v1/archive")
        assert refused.status_code == 403
        assert "read-only" in refused.json()["error"]


async def test_the_openapi_document_names_every_operation(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/v1/openapi.json")).json()
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert ("POST", "/api/v1/models/{model}/versions/{ref}/promote") in operations
    assert ("GET", "/api/v1/audit") in operations
    assert len(operations) == 14
    assert json.dumps(document)  # serialisable as served


async def test_the_update_stream_refuses_an_unknown_model_at_once(
    client: httpx.AsyncClient, team: Team
) -> None:
    reply = await client.get(
        "/api/v1/models/nobody/refs/production/watch", headers=team.headers("reader")
    )
    assert reply.status_code == 404
    assert (await client.get("/api/v1/models/resnet/refs/latest/watch")).status_code == 401


async def test_a_change_whose_commit_fails_is_put_back_and_never_announced(
    client: httpx.AsyncClient, team: Team, tmp_path: Path
) -> None:
    """The event of a web change is published once its commit is made (it was published
    as the metadata was written, so a refused commit left an event for a change undone)."""
    events_file = tmp_path / "events.jsonl"
    (team.repo / ".nexusrc").write_text(f"events_file: {events_file}\n")
    git(team.repo, "add", ".nexusrc")
    git(team.repo, "commit", "-q", "-m", "events to a file")
    git(team.repo, "config", "commit.gpgsign", "true")  # a signing program that fails
    git(team.repo, "config", "gpg.program", "false")
    before = head_commit(team.repo)[0]
    refused = await client.post(
        "/api/v1/models/bert/versions/v1/archive", headers=team.headers("maintainer")
    )
    assert refused.status_code >= 400, refused.text
    assert set(refused.json()) == {"error"}
    assert head_commit(team.repo)[0] == before
    assert git(team.repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert not events_file.exists() or events_file.read_text() == ""
    git(team.repo, "config", "commit.gpgsign", "false")
    done = await client.post(
        "/api/v1/models/bert/versions/v1/archive", headers=team.headers("maintainer")
    )
    assert done.status_code == 200, done.text
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["type"] for e in events] == ["dev.nexusml.version.archived"]


def test_the_apis_stages_and_statuses_are_the_registrys() -> None:
    """The API's Literals (the OpenAPI document's enums) are written out for the schema;
    they must name exactly what the registry has."""
    assert get_args(api.Stage) == lifecycle.STAGE_VALUES
    assert get_args(api.Status) == lifecycle.STATUSES
    promotable = get_args(api.PromoteBody.model_fields["stage"].annotation)
    assert set(promotable) == set(lifecycle.STAGE_VALUES) - {lifecycle.ARCHIVED}
