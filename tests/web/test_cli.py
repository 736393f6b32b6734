"""`nexus keys create --role` makes registry tokens; `nexus ui` serves the registry."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from control_plane.web.tokens import read_tokens
from tests.control_plane.test_cli import nexus
from tests.harness.servers import console_script, free_port, run_process
from tests.web.conftest import Team


def test_tokens_are_made_listed_and_revoked(tmp_path: Path) -> None:
    file = tmp_path / "tokens.json"
    made = nexus("keys", "create", "ada", "--role", "approver", "--email", "ada@example.com",
                 "--file", str(file))  # fmt: skip
    token = made.stdout.strip()
    assert token.startswith("nxr_")
    assert token not in file.read_text()  # only its digest is kept
    assert oct(file.stat().st_mode)[-3:] == "600"
    (record,) = read_tokens(file)
    assert (record.name, record.role.label, record.email) == ("ada", "approver", "ada@example.com")
    listed = json.loads(nexus("keys", "list", "--file", str(file), "--json").stdout)
    assert listed == [{"name": "ada", "role": "approver", "email": "ada@example.com"}]
    bad = nexus("keys", "create", "bob", "--role", "boss", "--file", str(file), code=2)
    assert "'boss' is not a role" in bad.stderr
    nexus("keys", "revoke", "ada", "--file", str(file))
    assert read_tokens(file) == []


def test_nexus_ui_serves_the_workspace_read_only(team: Team) -> None:
    port = free_port()
    with run_process(
        [console_script("nexus"), "ui", "--port", str(port)],
        f"http://127.0.0.1:{port}/",
        cwd=team.repo,
    ):
        page = httpx.get(f"http://127.0.0.1:{port}/models/resnet", timeout=10)
        assert page.status_code == 200
        assert "resnet v3" in page.text
        refused = httpx.post(f"http://127.0.0.1:{port}/api/v1/models/resnet/versions/v1/archive")
        assert refused.status_code == 403
