"""A team's registry with a few versions, and tokens of every role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from control_plane.web.app import create_app
from control_plane.web.roles import Role
from control_plane.web.settings import RegistrySettings
from control_plane.web.tokens import add_token
from tests.conftest import git
from tests.harness.repos import store_versions as store_versions


@dataclass(frozen=True)
class Team:
    repo: Path
    tokens_file: Path
    tokens: dict[str, str]  # role label -> token

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def team(repo: Path, tmp_path: Path) -> Team:
    git(repo, "config", "user.name", "Trainer")
    git(repo, "config", "user.email", "trainer@example.com")
    store_versions(repo, "resnet", 3, tmp_path)
    store_versions(repo, "bert", 2, tmp_path)
    tokens_file = tmp_path / "tokens.json"
    tokens = {
        role.label: add_token(
            tokens_file, f"{role.label}-person", role, f"{role.label}@example.com"
        )
        for role in Role
    }
    return Team(repo, tokens_file, tokens)


def asgi_client(settings: RegistrySettings) -> httpx.AsyncClient:
    """The app in this process, no socket: httpx over ASGI."""
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test")


@pytest.fixture
async def client(team: Team) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(RegistrySettings(workspace=team.repo, tokens=team.tokens_file)) as c:
        yield c


def head_commit(repo: Path) -> tuple[str, str, str]:
    """(hash, author 'name <email>', subject) of HEAD."""
    out = git(repo, "log", "-1", "--format=%H%n%an <%ae>%n%s")
    sha, author, subject = out.strip().split("\n")
    return sha, author, subject
