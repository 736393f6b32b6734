"""Store and load through S3 (moto's server, a separate process) against raw boto3.

    python bench/s3_transfer.py [--size-mib 1024]

Both sides use the same TransferConfig (the one nexus builds from .nexusrc:
64 MiB parts, 8 threads by default) so the comparison is like with like.
moto answers each ranged GET in time proportional to the whole object, so
downloads with many parts are slow against moto (not against S3); large parts
keep that cost equal on both sides. Prints a table and writes
bench/results/s3_transfer.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, save, table
from control_plane import Registry
from control_plane.settings import NexusConfig
from control_plane.storage.s3 import S3Backend
from tests.harness.repos import git_repo

BUCKET = "bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--chunk-mb", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    port = 19000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        config = NexusConfig(
            provider="s3",
            bucket=BUCKET,
            endpoint_url=url,
            region="us-east-1",
            multipart_chunk_mb=args.chunk_mb,
            max_concurrency=args.concurrency,
        )
        transfer = S3Backend(
            BUCKET,
            endpoint_url=url,
            region="us-east-1",
            chunk_bytes=args.chunk_mb * 2**20,
            max_concurrency=args.concurrency,
        ).transfer
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            root = Path(tmp)
            source = root / "model.bin"
            with source.open("wb") as fh:
                for _ in range(args.size_mib // 16):
                    fh.write(os.urandom(16 * 1024 * 1024))
            size = source.stat().st_size
            repo = git_repo(root / "repo")
            registry = Registry(repo, config=config)

            def raw_up(i: int) -> None:
                client.upload_file(str(source), BUCKET, f"raw/{i}.bin", Config=transfer)

            def raw_down(i: int) -> None:
                client.download_file(BUCKET, f"raw/{i}.bin", str(root / f"raw{i}"), Config=transfer)
                (root / f"raw{i}").unlink()

            def store(i: int) -> None:
                registry.store(source, f"model{i}")

            def load(i: int) -> None:
                registry.load("latest", root / f"out{i}", model_name=f"model{i}")
                (root / f"out{i}").unlink()

            up = best_of(args.runs, raw_up)
            st = best_of(args.runs, store)
            down = best_of(args.runs, raw_down)
            ld = best_of(args.runs, load)
    finally:
        moto.terminate()
        moto.wait(30)
    mib = size / 2**20
    rows = [
        ["raw boto3 upload_file", f"{up:.2f}", f"{mib / up:.0f}", "1.00x"],
        ["nexus store (sha256 + upload)", f"{st:.2f}", f"{mib / st:.0f}", f"{st / up:.2f}x"],
        ["raw boto3 download_file", f"{down:.2f}", f"{mib / down:.0f}", "1.00x"],
        ["nexus load (download + verify)", f"{ld:.2f}", f"{mib / ld:.0f}", f"{ld / down:.2f}x"],
    ]
    print(
        f"{args.size_mib} MiB through moto_server on 127.0.0.1, TransferConfig "
        f"{args.chunk_mb} MiB parts x {args.concurrency} threads, best of {args.runs}"
    )
    print(table(["operation", "seconds", "MiB/s", "vs raw"], rows))
    path = save(
        "s3_transfer",
        {
            "size_bytes": size,
            "chunk_mb": args.chunk_mb,
            "concurrency": args.concurrency,
            "seconds": {"raw_upload": up, "store": st, "raw_download": down, "load": ld},
            "ratio": {"store": st / up, "load": ld / down},
            "target_ratio": 1.2,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
