"""The compose stack's bucket job: wait for the S3 store to answer, then make the bucket.

Compose engines differ in what `depends_on` waits for (podman-compose ignores health
conditions), so this job does not rely on them: it retries until the store answers,
for up to NEXUS_STORE_WAIT_S seconds (120), and exits 0 once the bucket exists.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def main() -> int:
    bucket = os.environ["NEXUS_BUCKET"]
    endpoint = os.environ.get("NEXUS_ENDPOINT_URL")
    wait_s = float(os.environ.get("NEXUS_STORE_WAIT_S", "120"))
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("NEXUS_REGION", "us-east-1"),
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + wait_s
    said = None
    while True:
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if bucket not in existing:
                s3.create_bucket(Bucket=bucket)
            print(f"bucket {bucket} is ready at {endpoint}", flush=True)
            return 0
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                print(f"the store at {endpoint} did not answer within {wait_s:g} s: {exc}")
                return 1
            if str(exc) != said:
                print(f"waiting for the store at {endpoint}: {exc}", flush=True)
                said = str(exc)
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
