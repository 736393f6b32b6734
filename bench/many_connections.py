"""Ten thousand client connections held by one proxy, then a request on every one at once.

    python bench/many_connections.py [--connections 10000]

The proxy runs as its console script with its open-files soft limit lowered to
1,024 (as many systems start a process), so it must raise the limit itself; its
upstream is the simulated model (20 ms a batch of 32). Printed: the connections
held, the proxy's resident memory before and with them (and so per idle
connection), then how the requests sent on all of them at once were answered:
200, or refused at once beyond the queue bound (429 with Retry-After), nothing
else; and that /health still answers afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from tests.harness.connections import LOW_SOFT_LIMIT, hold, proxy_and_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    with proxy_and_model() as (url, pid):
        result = asyncio.run(hold(url, pid, args.connections))
    print(
        table(
            ["connections", "RSS before MB", "RSS held MB", "KiB/conn", "answers", "failed"],
            [
                [
                    result.connections,
                    result.rss_before_mb,
                    result.rss_held_mb,
                    result.kib_per_connection,
                    json.dumps(result.statuses),
                    result.failed_connections,
                ]
            ],
        )
    )
    print(
        f"\nall answered in {result.seconds_to_answer_all} s; proxy open-files soft limit "
        f"{result.soft_limit} (started at {LOW_SOFT_LIMIT}); /health after: {result.health_after}"
    )
    save("many_connections", asdict(result))


if __name__ == "__main__":
    main()
