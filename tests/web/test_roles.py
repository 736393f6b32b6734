"""Each action under each role: 2xx where roles.py allows it, 403 naming the role needed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from control_plane import Registry
from control_plane.core.errors import TokenFileError
from control_plane.web.roles import ACTIONS as NEEDED
from control_plane.web.roles import Role, allows
from control_plane.web.settings import RegistrySettings
from control_plane.web.tokens import parse_tokens
from nexus_common.keyfiles import KeyFileError, parse_records
from tests.conftest import git
from tests.web.conftest import Team, asgi_client, store_versions

# (action, stage, method, path, body), in an order that keeps each one meaningful
ACTIONS: list[tuple[str, str | None, str, str, dict[str, Any] | None]] = [
    ("promote", "staging", "POST", "/models/resnet/versions/v1/promote", {"stage": "staging"}),
    (
        "promote",
        "production",
        "POST",
        "/models/resnet/versions/v2/promote",
        {"stage": "production"},
    ),
    ("approve", None, "POST", "/models/resnet/versions/v3/approve", None),
    (
        "reject",
        None,
        "POST",
        "/models/resnet/versions/v3/reject",
        {"reason": "fails on night images"},
    ),
    ("archive", None, "POST", "/models/bert/versions/v2/archive", None),
    ("rollback", None, "POST", "/models/resnet/versions/v1/rollback", None),
    ("alias", None, "PUT", "/models/resnet/aliases/champion", {"ref": "v2"}),
    ("unalias", None, "DELETE", "/models/resnet/aliases/champion", None),
    ("delete", None, "DELETE", "/models/bert/versions/v1", None),
]


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.label)
async def test_the_role_matrix(team: Team, role: Role) -> None:
    settings = RegistrySettings(workspace=team.repo, tokens=team.tokens_file)
    async with asgi_client(settings) as client:
        for kind, stage, method, path, body in ACTIONS:
            reply = await client.request(
                method, "/api/v1" + path, json=body, headers=team.headers(role.label)
            )
            if allows(role, kind, stage):
                assert reply.status_code == 200, (kind, stage, reply.text)
            else:
                assert reply.status_code == 403, (kind, stage, reply.text)
                needed = "approver" if stage == "production" else None
                error = reply.json()["error"]
                assert f"needs the {needed or _least(kind)} role" in error
                assert f"token '{role.label}-person' is" in error


def _least(kind: str) -> str:
    return NEEDED[kind].label


def test_the_documented_matrix() -> None:
    """docs/web.md's table, as data: what each role may do."""
    may = {
        role.label: sorted(
            f"{kind}:{stage}" if stage else kind
            for kind, stage, *_ in ACTIONS
            if allows(role, kind, stage)
        )
        for role in Role
    }
    assert may["reader"] == []
    assert may["maintainer"] == sorted(
        ["promote:staging", "archive", "rollback", "alias", "unalias"]
    )
    assert may["approver"] == sorted(
        [*may["maintainer"], "promote:production", "approve", "reject"]
    )
    assert may["admin"] == sorted([*may["approver"], "delete"])


async def test_a_hundred_concurrent_actions_are_a_hundred_commits(
    team: Team, tmp_path: Any
) -> None:
    store_versions(team.repo, "vision", 50, tmp_path)
    before = git(team.repo, "rev-parse", "HEAD").strip()
    events_before = len(Registry(team.repo).history("vision"))
    settings = RegistrySettings(workspace=team.repo, tokens=team.tokens_file)
    async with asgi_client(settings) as client:

        async def act(n: int) -> httpx.Response:
            version = f"/api/v1/models/vision/versions/v{n // 2 + 1}"
            if n % 2 == 0:  # maintainers and admins move staging along
                who = "maintainer" if n % 4 == 0 else "admin"
                return await client.post(
                    version + "/promote", json={"stage": "staging"}, headers=team.headers(who)
                )
            return await client.post(version + "/approve", headers=team.headers("approver"))

        replies = await asyncio.gather(*(act(n) for n in range(100)))
    assert [r.status_code for r in replies] == [200] * 100
    commits = [r.json()["commit"] for r in replies]
    assert None not in commits
    assert len(set(commits)) == 100
    assert git(team.repo, "rev-list", "--count", f"{before}..HEAD").strip() == "100"
    authors = git(team.repo, "log", "--format=%an", f"{before}..HEAD").split("\n")
    assert {a for a in authors if a} == {"maintainer-person", "admin-person", "approver-person"}
    assert git(team.repo, "status", "--porcelain", "--untracked-files=no") == ""
    registry = Registry(team.repo)
    history = registry.history("vision")
    new = history[events_before:]
    seqs = [e["seq"] for e in history]
    assert len(seqs) == len(set(seqs))  # no event written twice or lost to a race
    assert sum(1 for e in new if e["what"] == "status") == 50  # each approval's event
    assert sum(1 for e in new if e["what"] == "stage" and e["to"] == "staging") == 50
    versions = registry.list("vision")
    assert {v.status for v in versions} == {"approved"}
    assert sum(1 for v in versions if v.stage == "staging") == 1


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"sha256": "zz"}], "token 'a' has no valid sha256"),
        ([{}, {}], "the name 'a' is used twice"),
        ([{"email": "nobody"}], "token 'a' has no valid email"),
    ],
)
def test_a_bad_token_file_is_named_with_its_fault(
    records: list[dict[str, str]], message: str
) -> None:
    """The digest and name checks are the proxy's key file's (one place for both)."""
    good = {"name": "a", "sha256": "0" * 64, "role": "reader", "email": "a@example.com"}
    body = json.dumps({"tokens": [{**good, **record} for record in records]})
    with pytest.raises(TokenFileError, match=message):
        parse_tokens(body, "tokens.json")
    keys = json.dumps({"keys": [{"name": "a", "sha256": "0" * 64, "rate": 1}] * 2})
    with pytest.raises(KeyFileError, match="the name 'a' is used twice"):
        parse_records(keys, "keys.json")
