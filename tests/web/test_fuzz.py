"""The REST API fuzzed by schemathesis from its own OpenAPI document, in this process
(ASGI, no network): every operation, at least 100 generated requests where the schema
allows that many, every schemathesis check, zero failures."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from control_plane.web.app import create_app
from control_plane.web.roles import Role
from control_plane.web.settings import RegistrySettings
from control_plane.web.tokens import add_token
from tests.web.conftest import store_versions

_WORK = Path(tempfile.mkdtemp(prefix="nexus-fuzz-"))


def _workspace() -> tuple[Path, str]:
    """A repository with two models (module scope: schemathesis loads the schema at import)."""
    repo = _WORK / "project"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "Fuzz"],
                 ["config", "user.email", "fuzz@example.com"],
                 ["commit", "-q", "--allow-empty", "-m", "start"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=repo, check=True)
    store_versions(repo, "resnet", 3, _WORK)
    store_versions(repo, "bert", 1, _WORK)
    token = add_token(_WORK / "tokens.json", "fuzzer", Role.ADMIN, "fuzz@example.com")
    return repo, token


REPO, TOKEN = _workspace()
APP = create_app(RegistrySettings(workspace=REPO, tokens=_WORK / "tokens.json"))
# The update stream never ends by design (tests/web/test_device_mode.py drives it).
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP).exclude(path_regex=r"/watch$")


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_holds_to_its_schema(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
