"""The hardware a version needs: recorded at store, shown, and refused before download by a
machine that lacks it (a follower keeps serving what it serves; `nexus serve` says so first)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane import Registry
from control_plane.cli import app
from control_plane.core.hardware import Machine, Requirements, unmet
from control_plane.web.settings import RegistrySettings
from tests.harness.models import make_torchscript
from tests.harness.repos import commit_all
from tests.harness.servers import console_script, free_port
from tests.model_server.conftest import ServerFactory
from tests.web.conftest import asgi_client

runner = CliRunner()
GIB = 1 << 30


def test_requirements_are_recorded_shown_and_checked(repo: Path, tmp_path: Path) -> None:
    make_torchscript(tmp_path / "m.pt")
    stored = runner.invoke(
        app,
        [
            *("store", str(tmp_path / "m.pt"), "big"),
            *("--requires", "cuda", "--min-memory", "16GiB", "--compute-capability", "8.0"),
        ],
    )
    assert stored.exit_code == 0, stored.output
    said = "cuda, 16.0 GiB of memory, compute capability 8.0 or newer"
    assert f"requires: {said}" in stored.output
    entry = Registry(repo).resolve("latest", "big")
    assert entry.requires == {"device": "cuda", "min_memory": 16 * GIB, "compute_capability": "8.0"}
    assert said in runner.invoke(app, ["show", "big@latest"]).output
    for bad, named in [
        (["--requires", "tpu"], "--requires tpu"),
        (["--min-memory", "lots"], "--min-memory"),
        (["--compute-capability", "eight"], "--compute-capability eight"),
    ]:
        refused = runner.invoke(app, ["store", str(tmp_path / "m.pt"), "other", *bad])
        assert refused.exit_code == 2
        assert named in refused.output

    needs = Requirements.from_json(entry.requires)
    cpu = Machine("cpu", 64 * GIB)
    assert unmet(needs, cpu, "big@1") == "big@1 requires a CUDA GPU; this server runs on the CPU"
    small_gpu = Machine("cuda", 8 * GIB, (9, 0))
    assert "requires 16.0 GiB of memory; this GPU has 8.0 GiB" in str(unmet(needs, small_gpu, "b"))
    old_gpu = Machine("cuda", 80 * GIB, (7, 5))
    assert "compute capability 8.0 or newer; this GPU has 7.5" in str(unmet(needs, old_gpu, "b"))
    assert unmet(needs, Machine("cuda", 80 * GIB, (9, 0)), "b") is None
    assert unmet(Requirements(), cpu, "b") is None


async def test_the_registry_page_shows_what_a_version_needs(repo: Path, tmp_path: Path) -> None:
    make_torchscript(tmp_path / "m.pt")
    needs = Requirements.parse("cuda", "24GiB", None)
    entry = Registry(repo).store(tmp_path / "m.pt", "big", requires=needs).entry
    settings = RegistrySettings(workspace=repo)
    async with asgi_client(settings) as client:
        page = await client.get(f"/models/big/versions/{entry.commit_hash}")
    assert page.status_code == 200, page.text
    assert "Runs on: <b>cuda, 24.0 GiB of memory</b>" in page.text


async def test_a_cpu_server_refuses_a_cuda_version_and_keeps_serving(
    repo: Path, tmp_path: Path, server: ServerFactory
) -> None:
    make_torchscript(tmp_path / "m.pt")
    first = Registry(repo).store(tmp_path / "m.pt", "m").entry
    async with server(model_name="m", device="cpu", poll_interval_s=0.1) as client:
        (repo / "train.py").write_text("# trained for a GPU\n")
        commit_all(repo, "train on a GPU")
        needs = Requirements.parse("cuda", None, None)
        gpu = Registry(repo).store(tmp_path / "m.pt", "m", requires=needs).entry
        reason = f"{gpu.label} requires a CUDA GPU; this server runs on the CPU"
        for _ in range(100):
            deployment = (await client.get("/deployment")).json()
            if deployment["waiting"] is not None:
                break
            await asyncio.sleep(0.05)
        assert deployment["waiting"] == {"event": "refused", "reason": reason}
        refused = [e for e in deployment["events"] if e["event"] == "refused"]
        assert refused[-1]["version"]["commit_hash"] == gpu.commit_hash
        assert all(e["event"] != "loading" or e["version"]["commit_hash"] != gpu.commit_hash
                   for e in deployment["events"])  # fmt: skip
        answer = await client.post("/predict", json={"input": [0.0] * 4})
        assert answer.json()["model"]["commit_hash"] == first.commit_hash
    cached = list((tmp_path / "cache").iterdir())
    assert [p.name for p in cached] == [f"{first.sha256}.pt"]  # never downloaded


@pytest.mark.timeout(120)
def test_nexus_serve_says_it_before_starting(repo: Path, tmp_path: Path) -> None:
    make_torchscript(tmp_path / "m.pt")
    Registry(repo).store(tmp_path / "m.pt", "m", requires=Requirements.parse("cuda", None, None))
    done = subprocess.run(
        [
            *(console_script("nexus"), "serve", "--port", str(free_port())),
            *("--model-port", str(free_port()), "--device", "cpu"),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 1
    assert "requires a CUDA GPU; this server runs on the CPU" in done.stderr + done.stdout
    assert "Starting" not in done.stdout
