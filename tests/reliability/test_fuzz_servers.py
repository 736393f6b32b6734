"""The proxy's and the model server's HTTP APIs fuzzed by schemathesis, in this process.

The model server's schema is FastAPI's own; the proxy's is written by hand
(batch_proxy/openapi.json, which the proxy serves) and first checked with
openapi-spec-validator. Every operation gets at least 100 generated requests where its
schema allows that many, every schemathesis check runs, and none may fail: no 5xx, no
status or body the schema does not name.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from batch_proxy.app import ProxyApp, openapi_document
from batch_proxy.settings import ProxySettings
from control_plane import Registry
from model_server.app import create_app
from model_server.settings import ServerSettings
from tests.harness.models import make_torchscript
from tests.harness.repos import git_repo
from tests.harness.servers import free_port
from tests.harness.sim_model import SimModel
from tests.reliability.threaded import serve_on_thread, stop_all

PROXY_SCHEMA = Path(__file__).resolve().parents[2] / "batch_proxy" / "openapi.json"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _model_server_app() -> Any:
    """A model server of a TorchScript MLP stored in a fresh repository (not started)."""
    work = Path(tempfile.mkdtemp(prefix="nexus-fuzz-"))
    repo = git_repo(work / "project")
    make_torchscript(work / "mlp.pt")
    Registry(repo).store(work / "mlp.pt", "mlp")
    settings = ServerSettings(repo=repo, cache_dir=work / "cache", device="cpu", follow=False)
    return create_app(settings)


# The apps and their documents are made at import (schemathesis parametrizes from them);
# they are served only while this module's tests run.
SIM_PORT = free_port()
PROXY_APP = ProxyApp(
    ProxySettings(upstreams=(f"http://127.0.0.1:{SIM_PORT}",), health_interval_s=0.2)
)
SERVER_APP = _model_server_app()
proxy_schema = schemathesis.openapi.from_dict(
    orjson.loads(openapi_document(PROXY_APP.settings.priority_levels))
)
server_schema = schemathesis.openapi.from_dict(SERVER_APP.openapi())


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    try:
        serve_on_thread(SimModel(latency_ms=1), port=SIM_PORT)
        found = {
            "proxy": serve_on_thread(PROXY_APP, lifespan="on"),
            "model server": serve_on_thread(SERVER_APP, lifespan="on"),
        }
        for url in found.values():
            for _ in range(200):
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
                time.sleep(0.05)
        yield found
    finally:
        stop_all()


def test_the_proxys_schema_is_valid_openapi() -> None:
    validate(json.loads(PROXY_SCHEMA.read_text()))


@proxy_schema.parametrize()
@FUZZ
def test_the_proxy_holds_to_its_schema(case: schemathesis.Case[Any], urls: dict[str, str]) -> None:
    # A v2 tensor's data must agree with its shape and datatype, which JSON Schema cannot
    # express: a schema-valid body may still be the caller's 400. Every other check runs.
    infer = case.operation.path.endswith("/infer")
    skip: list[Any] | None = [positive_data_acceptance] if infer else None
    case.call_and_validate(base_url=urls["proxy"], excluded_checks=skip)


@server_schema.parametrize()
@FUZZ
def test_the_model_server_holds_to_its_schema(
    case: schemathesis.Case[Any], urls: dict[str, str]
) -> None:
    # What one item must be is the model's (an MLP's {"input": [4 numbers]}), not the
    # schema's: a schema-valid item may be refused, 422. (A batch's bad items are errors
    # at their index of a 200, so the batch routes keep every check.)
    single = case.operation.path.endswith("/predict") or case.operation.path.endswith("/infer")
    skip: list[Any] | None = [positive_data_acceptance] if single else None
    case.call_and_validate(base_url=urls["model server"], excluded_checks=skip)
