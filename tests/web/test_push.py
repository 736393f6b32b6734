"""`--push`: each change's commit reaches the team's remote, through a rejected push too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from control_plane import Registry
from control_plane.web.settings import RegistrySettings
from tests.conftest import git
from tests.web.conftest import Team, asgi_client, store_versions


def remote_metadata(remote: Path) -> dict[str, Any]:
    return dict(json.loads(git(remote, "show", "main:.nexus_meta.json")))


async def test_a_change_is_pushed_and_a_rejected_push_is_merged_then_pushed(
    team: Team, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(team.repo, "remote", "add", "origin", str(remote))
    Registry(team.repo).init()  # the merge driver, as `nexus init` sets a clone up
    git(team.repo, "add", "-A")
    git(team.repo, "commit", "-q", "--allow-empty", "-m", "nexus init")
    git(team.repo, "push", "-q", "origin", "main")
    colleague = tmp_path / "colleague"
    subprocess.run(["git", "clone", "-q", str(remote), str(colleague)], check=True)
    git(colleague, "config", "user.name", "Colleague")
    git(colleague, "config", "user.email", "colleague@example.com")
    Registry(colleague).init()

    settings = RegistrySettings(workspace=team.repo, tokens=team.tokens_file, push=True)
    async with asgi_client(settings) as client:
        first = await client.post(
            "/api/v1/models/resnet/versions/v1/promote",
            json={"stage": "staging"},
            headers=team.headers("maintainer"),
        )
        assert first.status_code == 200, first.text
        assert first.json()["pushed"] is True
        assert git(remote, "rev-parse", "main").strip() == first.json()["commit"]

        # Meanwhile a colleague stores a version and pushes: the server's next push is rejected.
        git(colleague, "pull", "-q", "--no-rebase", "origin", "main")
        store_versions(colleague, "whisper", 1, tmp_path)
        git(colleague, "push", "-q", "origin", "main")
        second = await client.post(
            "/api/v1/models/resnet/versions/v2/approve", headers=team.headers("approver")
        )
        assert second.status_code == 200, second.text
        assert second.json()["pushed"] is True
    shared = remote_metadata(remote)["models"]
    assert "whisper" in {m["model_name"] for m in shared}  # the colleague's version survived
    resnet = {m["version"]: m for m in shared if m["model_name"] == "resnet"}
    assert resnet[1]["stage"] == "staging"
    assert resnet[2]["status"] == "approved"
    log = git(remote, "log", "--format=%an|%s", "main").splitlines()
    assert any(line.startswith("approver-person|Approve resnet v2") for line in log)
    assert any(line.startswith("maintainer-person|Promote resnet v1") for line in log)
