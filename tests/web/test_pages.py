"""The pages, rendered in this process: what a person sees, and the forms' round trip."""

from __future__ import annotations

import re

import httpx

from control_plane import Registry
from control_plane.web.settings import RegistrySettings
from tests.web.conftest import Team, asgi_client, head_commit


async def signed_in(client: httpx.AsyncClient, team: Team, role: str) -> None:
    reply = await client.post("/login", data={"token": team.tokens[role], "next": "/"})
    assert reply.status_code == 303


async def test_pages_ask_for_a_token_then_show_the_models(
    client: httpx.AsyncClient, team: Team
) -> None:
    first = await client.get("/models/resnet")
    assert first.status_code == 303
    assert first.headers["location"] == "/login?next=/models/resnet"
    refused = await client.post("/login", data={"token": "nxr_wrong", "next": "/"})
    assert refused.status_code == 401
    assert "not valid" in refused.text
    await signed_in(client, team, "reader")
    page = await client.get("/")
    assert page.status_code == 200
    assert "resnet v3" in page.text
    assert 'href="/models/bert"' in page.text


async def test_the_model_page_has_metric_columns_a_chart_and_the_roles_buttons(
    client: httpx.AsyncClient, team: Team
) -> None:
    await signed_in(client, team, "reader")
    as_reader = (await client.get("/models/resnet?metric=loss")).text
    assert "<th>accuracy</th>" in as_reader
    assert "<th>loss</th>" in as_reader
    assert '<svg class="chart"' in as_reader
    assert 'aria-label="loss across versions"' in as_reader
    assert "data-action=" not in as_reader  # a reader gets no buttons
    await signed_in(client, team, "maintainer")
    as_maintainer = (await client.get("/models/resnet")).text
    buttons = set(re.findall(r'data-action="([a-z-]+)"', as_maintainer))
    assert {"promote-staging", "archive", "rollback"} <= buttons
    assert not buttons & {"promote-production", "approve", "reject", "delete"}


async def test_a_form_promotes_and_comes_back_saying_so(
    client: httpx.AsyncClient, team: Team
) -> None:
    await signed_in(client, team, "approver")
    entry = Registry(team.repo).resolve("v2", "resnet")
    reply = await client.post(
        f"/models/resnet/versions/{entry.commit_hash}/promote",
        data={"stage": "production", "next": "/models/resnet"},
    )
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/models/resnet?done=Promote%20resnet%20v2")
    page = await client.get(reply.headers["location"])
    assert "Promote resnet v2" in page.text
    assert re.search(
        r'id="v-' + entry.short_hash + r'">.*?<td class="stage">production</td>', page.text, re.S
    )
    assert head_commit(team.repo)[1] == "approver-person <approver@example.com>"


async def test_a_refused_form_says_why_and_changes_nothing(
    client: httpx.AsyncClient, team: Team
) -> None:
    await signed_in(client, team, "maintainer")
    before = head_commit(team.repo)[0]
    reply = await client.post("/models/resnet/versions/v1/delete", data={"next": "/models/resnet"})
    assert reply.status_code == 403
    assert "needs the admin role" in reply.text
    assert head_commit(team.repo)[0] == before


async def test_a_form_from_another_site_is_refused(client: httpx.AsyncClient, team: Team) -> None:
    await signed_in(client, team, "admin")
    reply = await client.post(
        "/models/resnet/versions/v1/archive",
        data={"next": "/"},
        headers={"Origin": "https://evil.example"},
    )
    assert reply.status_code == 403
    assert Registry(team.repo).resolve("v1", "resnet").stage is None


async def test_the_version_page_and_the_audit_timeline(
    client: httpx.AsyncClient, team: Team
) -> None:
    await signed_in(client, team, "approver")
    for ref in ("v1", "v3"):
        await client.post(
            f"/api/v1/models/resnet/versions/{ref}/promote",
            json={"stage": "production"},
            headers=team.headers("approver"),
        )
    version = (await client.get("/models/resnet/versions/v3")).text
    assert "nexus load v3 ./resnet --model-name resnet" in version
    assert '<svg class="lineage"' in version
    assert "approver-person" in version  # its history
    audit = (await client.get("/audit?model=resnet")).text
    assert "resnet in production" in audit
    assert audit.count('class="span"') == 2
    missing = await client.get("/models/resnet/versions/v9")
    assert missing.status_code == 404


async def test_read_only_pages_need_no_sign_in(team: Team) -> None:
    async with asgi_client(RegistrySettings(workspace=team.repo)) as client:
        page = await client.get("/models/bert")
        assert page.status_code == 200
        assert "read-only" in page.text
        assert "data-action=" not in page.text
