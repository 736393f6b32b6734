"""The Docker files checked against the code (no container engine runs in `make test`;
`deploy/compose/check.sh` runs the stack itself), and the bucket job against a real S3."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
from tests.harness.servers import free_port

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
    bucket_job = (ROOT / "deploy" / "compose" / "create_bucket.py").read_text()
    names |= set(re.findall(r"\b(NEXUS_[A-Z_]+)\b", bucket_job))
    return names


def program(service: dict[str, Any]) -> list[str]:
    return [*service.get("entrypoint", []), *service.get("command", [])]


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "build" in s])
def test_built_services_run_console_scripts(name: str) -> None:
    service = SERVICES[name]
    assert service["build"] == "."
    assert service["image"] == "nexusml:latest"  # one image, built once
    assert (ROOT / "Dockerfile").is_file()
    assert program(service)[0] in {*SCRIPTS, "python"}


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
    # Started, not healthy: an empty workspace must not keep the proxy from starting. No
    # service relies on a health condition (podman-compose ignores them): each waits itself.
    assert SERVICES["proxy"]["depends_on"] == ["model-server"]
    for name, service in SERVICES.items():
        assert isinstance(service.get("depends_on", []), list), name


def test_cli_service_and_minio_wiring() -> None:
    cli = SERVICES["nexus"]
    assert cli["entrypoint"] == ["nexus"]
    assert cli["environment"]["NEXUS_PROVIDER"] == "s3"
    assert cli["environment"]["NEXUS_ENDPOINT_URL"] == "http://minio:9000"
    assert "9000:9000" in SERVICES["minio"]["ports"]
    bucket_job = SERVICES["create-bucket"]
    assert bucket_job["command"] == ["python", "/app/create_bucket.py"]
    assert "COPY deploy/compose/create_bucket.py /app/create_bucket.py" in DOCKERFILE
    assert bucket_job["environment"]["NEXUS_ENDPOINT_URL"] == "http://minio:9000"


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


def test_the_cpu_image_installs_torch_before_the_project() -> None:
    """torch from the CPU index (or a local wheel) first, so `.[all]` pulls no CUDA build."""
    torch_step = DOCKERFILE.index('TORCH_CPU_INDEX" torch')
    assert torch_step < DOCKERFILE.index('pip install ".[all]"')
    assert "must hold no CUDA libraries" in DOCKERFILE


def run_bucket_job(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "compose" / "create_bucket.py")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_bucket_job_makes_the_bucket_once_the_store_answers(moto_url: str) -> None:
    env = {
        "NEXUS_BUCKET": "compose-models",
        "NEXUS_ENDPOINT_URL": moto_url,
        "NEXUS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    for _ in range(2):  # a second run (a restarted stack) finds it there
        done = run_bucket_job(env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "bucket compose-models is ready" in done.stdout
    silent = {**env, "NEXUS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    done = run_bucket_job({**silent, "NEXUS_STORE_WAIT_S": "1"})
    assert done.returncode == 1
    assert "waiting for the store" in done.stdout
    assert "did not answer within 1 s" in done.stdout
