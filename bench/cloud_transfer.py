"""Store and load through SeaweedFS (a real S3 server) and Azurite (Azure Blob Storage's
emulator) against each SDK's own upload and download with the same settings.

    python bench/cloud_transfer.py [--size-mib 1024] [--runs 3] [--stores seaweedfs,azurite]

Each store runs as its own process on 127.0.0.1 (tests/harness/stores.py), keeping its data on
disk. The raw side uses what nexus builds from .nexusrc: boto3's TransferConfig with the
same parts and threads for S3, a BlobServiceClient with the same block sizes and
max_concurrency for Azure. `nexus store` adds a sha256 pass and the metadata write;
`nexus load` a verification pass, so each is also set beside the raw call plus one
hashlib pass over the file (DESIGN.md's second yardstick). Median of `--runs`; each
run's objects are deleted after it. Prints a table and writes
bench/results/cloud_transfer.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from control_plane import Registry
from control_plane.core.hashing import sha256_file
from control_plane.settings import NexusConfig
from tests.harness.repos import git_repo
from tests.harness.stores import (
    SEAWEED_KEY,
    SEAWEED_SECRET,
    azurite_connection_string,
    azurite_server,
    seaweedfs_client,
    seaweedfs_server,
)

BUCKET = "bench"
MIB = 2**20


def median_of(runs: int, step: Callable[[int], object], after: Callable[[int], None]) -> float:
    """The median wall time of `step(i)` over `runs`; `after(i)` (cleanup) is not timed."""
    times = []
    for i in range(runs):
        started = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - started)
        after(i)
    return statistics.median(times)


class Side:
    """One store's raw SDK calls and its .nexusrc."""

    config: NexusConfig

    def raw_upload(self, source: Path, key: str) -> None:
        raise NotImplementedError

    def raw_download(self, key: str, dest: Path) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError


class SeaweedSide(Side):
    def __init__(self, url: str, chunk_mb: int, threads: int) -> None:
        from boto3.s3.transfer import TransferConfig

        os.environ.update(AWS_ACCESS_KEY_ID=SEAWEED_KEY, AWS_SECRET_ACCESS_KEY=SEAWEED_SECRET)
        self.client = seaweedfs_client(url)
        self.client.create_bucket(Bucket=BUCKET)
        part = chunk_mb * MIB
        self.transfer = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=threads
        )
        self.config = NexusConfig(
            provider="s3",
            bucket=BUCKET,
            endpoint_url=url,
            region="us-east-1",
            multipart_chunk_mb=chunk_mb,
            max_concurrency=threads,
        )

    def raw_upload(self, source: Path, key: str) -> None:
        self.client.upload_file(str(source), BUCKET, key, Config=self.transfer)

    def raw_download(self, key: str, dest: Path) -> None:
        self.client.download_file(BUCKET, key, str(dest), Config=self.transfer)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=BUCKET, Key=key)


class AzuriteSide(Side):
    def __init__(self, url: str, chunk_mb: int, threads: int) -> None:
        from azure.storage.blob import BlobServiceClient

        connection = azurite_connection_string(url)
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = connection
        part = chunk_mb * MIB
        service = BlobServiceClient.from_connection_string(
            connection,
            max_block_size=part,
            max_single_put_size=part,
            max_chunk_get_size=part,
            max_single_get_size=part,
        )
        self.container = service.create_container(BUCKET)
        self.threads = threads
        self.config = NexusConfig(
            provider="azure", bucket=BUCKET, multipart_chunk_mb=chunk_mb, max_concurrency=threads
        )

    def raw_upload(self, source: Path, key: str) -> None:
        with source.open("rb") as data:
            self.container.upload_blob(key, data, max_concurrency=self.threads)

    def raw_download(self, key: str, dest: Path) -> None:
        with dest.open("wb") as out:
            self.container.download_blob(key, max_concurrency=self.threads).readinto(out)

    def delete(self, key: str) -> None:
        self.container.delete_blob(key)


def measure(side: Side, root: Path, source: Path, runs: int) -> dict[str, float]:
    registry = Registry(git_repo(root / "repo"), config=side.config)
    out = root / "out.bin"

    def store(i: int) -> None:
        registry.store(source, f"model{i}")

    def drop_stored(i: int) -> None:
        side.delete(registry.resolve("latest", f"model{i}").storage_uri)

    def load(i: int) -> None:
        registry.load("latest", out, model_name="model0")

    up = median_of(runs, lambda i: side.raw_upload(source, f"raw/{i}.bin"), lambda i: None)
    down = median_of(runs, lambda i: side.raw_download(f"raw/{i}.bin", out), lambda i: out.unlink())
    for i in range(runs):
        side.delete(f"raw/{i}.bin")
    stored = median_of(runs, store, lambda i: drop_stored(i) if i else None)
    loaded = median_of(runs, load, lambda i: out.unlink())
    drop_stored(0)
    hashed = median_of(runs, lambda i: sha256_file(source), lambda i: None)
    return {
        "raw_upload": up,
        "store": stored,
        "raw_download": down,
        "load": loaded,
        "sha256_pass": hashed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-mb", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stores", default="seaweedfs,azurite")
    args = parser.parse_args()
    servers: dict[str, Any] = {"seaweedfs": seaweedfs_server, "azurite": azurite_server}
    sides: dict[str, Callable[[str, int, int], Side]] = {
        "seaweedfs": SeaweedSide,
        "azurite": AzuriteSide,
    }
    results: dict[str, dict[str, float]] = {}
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp)
        source = root / "model.bin"
        with source.open("wb") as fh:
            for _ in range(args.size_mib // 16):
                fh.write(os.urandom(16 * MIB))
        mib = source.stat().st_size / MIB
        for name in args.stores.split(","):
            options = {"on_disk": True} if name == "azurite" else {}
            with servers[name](root / f"{name}-data", **options) as url:
                side = sides[name](url, args.chunk_mb, args.concurrency)
                work = root / name
                work.mkdir()
                seconds = results[name] = measure(side, work, source, args.runs)
            up, st = seconds["raw_upload"], seconds["store"]
            down, ld = seconds["raw_download"], seconds["load"]
            hashed = seconds["sha256_pass"]
            for operation, took, raw in (
                ("raw SDK upload", up, up),
                ("nexus store (sha256 + upload)", st, up),
                ("raw SDK download", down, down),
                ("nexus load (download + verify)", ld, down),
            ):
                beside = "" if operation.startswith("raw") else f"{took / (raw + hashed):.2f}x"
                ratio = f"{took / raw:.2f}x"
                rows.append([name, operation, f"{took:.2f}", f"{mib / took:.0f}", ratio, beside])
    print(
        f"{args.size_mib} MiB on 127.0.0.1, {args.chunk_mb} MiB parts/blocks x "
        f"{args.concurrency} threads on both sides, median of {args.runs}"
    )
    print(
        table(["store", "operation", "seconds", "MiB/s", "vs raw", "vs raw + 1 sha256 pass"], rows)
    )
    path = save(
        "cloud_transfer",
        {
            "size_mib": args.size_mib,
            "chunk_mb": args.chunk_mb,
            "concurrency": args.concurrency,
            "runs": args.runs,
            "seconds": results,
            "ratio": {
                name: {"store": s["store"] / s["raw_upload"], "load": s["load"] / s["raw_download"]}
                for name, s in results.items()
            },
            "ratio_to_raw_plus_one_sha256_pass": {
                name: {
                    "store": s["store"] / (s["raw_upload"] + s["sha256_pass"]),
                    "load": s["load"] / (s["raw_download"] + s["sha256_pass"]),
                }
                for name, s in results.items()
            },
            "target_ratio": 1.2,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
