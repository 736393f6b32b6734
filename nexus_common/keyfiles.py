"""The API-key file: what `nexus keys` writes and `nexus-proxy --api-keys` reads.

JSON, `{"keys": [{"name": ..., "sha256": <hex of the key>, "rate": <requests/s>,
"burst": <requests>, "models": [...]}]}`; keys are never in the file in clear. Token files
(the registry's web server) share the digest and name checks and the private writes.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nexus_common.errors import FileFormatError
from nexus_common.errors import KeyFileError as KeyFileError  # the key file's own error
from nexus_common.files import read_private_text, write_private_json

KEY_PREFIX = "nxk_"


@dataclass(frozen=True)
class KeyRecord:
    name: str
    sha256: str
    rate: float
    burst: float
    models: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "sha256": self.sha256,
            "rate": self.rate,
            "burst": self.burst,
        }
        if self.models:
            body["models"] = list(self.models)
        return body


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_records(text: str, source: str) -> list[KeyRecord]:
    try:
        body = json.loads(text or '{"keys": []}')
        records = [
            KeyRecord(
                name=str(raw["name"]),
                sha256=str(raw["sha256"]).lower(),
                rate=float(raw["rate"]),
                burst=float(raw.get("burst", max(1.0, raw["rate"]))),
                models=tuple(str(m) for m in raw.get("models", ())),
            )
            for raw in body["keys"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{source} is not a key file ({exc}).") from exc
    check_digests_and_names(records, source, KeyFileError, "key")
    for record in records:
        if not (record.rate > 0 and math.isfinite(record.rate) and record.burst >= 1):
            raise KeyFileError(
                f"{source}: key '{record.name}' needs a positive rate and a burst of 1 or more."
            )
    return records


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def check_digests_and_names(
    records: Sequence[_Named], source: str, error: type[FileFormatError], noun: str
) -> None:
    """What key and token files share: each record's sha256 is 64 hex digits, and no name
    is used twice (a name is what logs, metrics and commits show)."""
    names: set[str] = set()
    for record in records:
        if len(record.sha256) != 64 or any(c not in "0123456789abcdef" for c in record.sha256):
            raise error(f"{source}: {noun} '{record.name}' has no valid sha256.")
        if record.name in names:
            raise error(f"{source}: the name '{record.name}' is used twice.")
        names.add(record.name)


def read_records(path: Path) -> list[KeyRecord]:
    return parse_records(read_private_text(path, KeyFileError), str(path))


def add_key(
    path: Path, name: str, rate: float, burst: float | None, models: tuple[str, ...] = ()
) -> str:
    """Make a new random key, add its record (the digest only) to the file, return the key."""
    records = read_records(path)
    if any(r.name == name for r in records):
        raise KeyFileError(f"{path} already has a key named '{name}'.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(
        name, digest(key), rate, burst if burst is not None else max(1.0, rate), models
    )
    parse_records(json.dumps({"keys": [record.to_json()]}), "the new key")  # same checks
    write_records(path, [*records, record])
    return key


def revoke_key(path: Path, name: str) -> None:
    records = read_records(path)
    if not any(r.name == name for r in records):
        raise KeyFileError(f"{path} has no key named '{name}'.")
    write_records(path, [r for r in records if r.name != name])


def write_records(path: Path, records: list[KeyRecord]) -> None:
    """A running proxy picks the new file up within a second."""
    write_private_json(path, {"keys": [r.to_json() for r in records]})
