"""Checking a /predict/batch body: the wire module's bare check against a strict pydantic model.

    python bench/request_validation.py

Items are free-form JSON, so either way only `{"inputs": [...]}` (a list, 1 to the limit)
is checked; this measures what each costs per request for 1 and 32 MLP-sized items,
after orjson has parsed the body (both paths start from the same parsed object).
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from pydantic import BaseModel, ConfigDict, Field

from bench._common import save, table
from nexus_common import wire


class StrictBatch(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    inputs: list[Any] = Field(min_length=1, max_length=256)


def main() -> None:
    rows, results = [], {}
    for size in (1, 32):
        body = orjson.dumps({"inputs": [{"input": [0.1, 0.2, 0.3, 0.4] * 16}] * size})
        parsed = orjson.loads(body)
        steps: dict[str, Callable[[], object]] = {
            "orjson.loads": partial(orjson.loads, body),
            "wire.check_request": partial(wire.check_request, parsed, 256),
            "pydantic strict model_validate": partial(StrictBatch.model_validate, parsed),
            "pydantic model_validate_json (parse+check)": partial(
                StrictBatch.model_validate_json, body
            ),
        }
        runs = 20000
        per = {
            name: min(timeit.repeat(step, number=runs, repeat=5)) / runs * 1e6
            for name, step in steps.items()
        }
        results[size] = per
        rows += [[size, name, f"{us:.2f}"] for name, us in per.items()]
    print(table(["items", "step", "µs per request"], rows))
    print(f"wrote {save('request_validation', {'microseconds': results})}")


if __name__ == "__main__":
    main()
