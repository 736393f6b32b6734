"""No Docker engine runs here, so the Docker files are checked against the code instead."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic_settings import CliApp

from batch_proxy.settings import ProxySettings, settings_from
from control_plane.settings import NexusConfig
from model_server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def known_variables() -> set[str]:
    names = {f"NEXUS_{name.upper()}" for name in ServerSettings.model_fields}
    names |= {f"NEXUS_PROXY_{name.upper()}" for name in ProxySettings.model_fields}
    names |= {f"NEXUS_{name.upper()}" for name in NexusConfig.model_fields}
    names.add("NEXUS_HEALTH_PORT")  # read by the Dockerfile's HEALTHCHECK
    return names


def program(service: dict[str, Any]) -> list[str]:
    return [*service.get("entrypoint", []), *service.get("command", [])]


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "build" in s])
def test_built_services_run_console_scripts(name: str) -> None:
    service = SERVICES[name]
    assert service["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    assert program(service)[0] in SCRIPTS


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_nexus_variable_is_read_by_the_code(name: str) -> None:
    environment = SERVICES[name].get("environment", {})
    unknown = {k for k in environment if k.startswith("NEXUS_")} - known_variables()
    assert not unknown, f"{name} sets variables no code reads: {unknown}"


def test_model_server_command_and_port() -> None:
    service = SERVICES["model-server"]
    settings = CliApp.run(ServerSettings, cli_args=service["command"][1:])
    assert settings.host == "0.0.0.0"
    assert service["expose"] == [str(settings.port)]
    assert "ports" not in service  # internal only
    assert service["environment"]["NEXUS_HEALTH_PORT"] == str(settings.port)
    assert f":{settings.port}/ready" in " ".join(service["healthcheck"]["test"])


def test_proxy_command_port_and_upstream() -> None:
    service = SERVICES["proxy"]
    settings = settings_from(service["command"][1:], service.get("environment", {}))
    assert settings.host == "0.0.0.0"
    assert service["ports"] == [f"{settings.port}:{settings.port}"]
    assert service["environment"]["NEXUS_HEALTH_PORT"] == str(settings.port)
    (upstream,) = settings.upstreams
    parsed = urlparse(upstream)
    assert parsed.hostname == "model-server"
    model_port = CliApp.run(ServerSettings, cli_args=SERVICES["model-server"]["command"][1:]).port
    assert parsed.port == model_port
    # Started, not healthy: an empty workspace must not keep the proxy from starting.
    assert SERVICES["proxy"]["depends_on"]["model-server"]["condition"] == "service_started"


def test_cli_service_and_minio_wiring() -> None:
    cli = SERVICES["nexus"]
    assert cli["entrypoint"] == ["nexus"]
    assert cli["environment"]["NEXUS_PROVIDER"] == "s3"
    assert cli["environment"]["NEXUS_ENDPOINT_URL"] == "http://minio:9000"
    assert "9000:9000" in SERVICES["minio"]["ports"]
    assert "mc mb" in " ".join(SERVICES["create-bucket"]["command"])


def test_dockerfile() -> None:
    assert re.search(r"^USER nexus$", DOCKERFILE, re.MULTILINE)
    assert "HEALTHCHECK" in DOCKERFILE
    assert "NEXUS_HEALTH_PORT" in DOCKERFILE
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE):
        assert (ROOT / source).exists(), source
    for cmd in re.findall(r'^CMD \["([^"]+)"', DOCKERFILE, re.MULTILINE):
        assert cmd in SCRIPTS
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored
    assert ".git" in ignored
