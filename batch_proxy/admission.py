"""Who may use the proxy, and how fast: API keys and a token bucket per key.

The key file (`--api-keys FILE`) is JSON: `{"keys": [{"name": ..., "sha256": <hex of the
key>, "rate": <requests/s>, "burst": <requests>, "models": [...]}]}`. Keys are never in
the file in clear: a presented key is hashed and the digest compared in constant time.
The file is re-read when it changes (checked every `RELOAD_INTERVAL_S`), so a key is
added or revoked without a restart; a file that stops parsing keeps the last good keys
and logs why. Standard library only: `nexus keys create` writes the same format.
`models` is kept for per-model routing (one queue per model); a single-model proxy
admits by key and rate alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("nexus.proxy")

RELOAD_INTERVAL_S = 0.5
KEY_PREFIX = "nxk_"
_CACHE_LIMIT = 4096  # presented keys remembered (valid or not) between reloads


class KeyFileError(ValueError):
    """The key file cannot be read or breaks its format."""


@dataclass
class TokenBucket:
    """`rate` tokens a second up to `burst`; one request takes one token. Pure: the time is
    handed in, so it is tested exactly."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> float:
        """0.0 if admitted; else how many seconds until a token is there."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


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


@dataclass(frozen=True)
class Verdict:
    """What admission decided: 200 (admitted), 401 or 429, for which key, and the wait."""

    status: int
    key_name: str
    retry_after_s: float = 0.0


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
    records: Sequence[_Named], source: str, error: type[ValueError], noun: str
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
    return parse_records(read_private_json(path, KeyFileError), str(path))


def read_private_json(path: Path, error: type[ValueError]) -> str:
    """A key or token file's text ('' when there is none yet); `error` when unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}.") from exc


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


def write_private_json(path: Path, body: Any) -> None:
    """Atomically, readable by its owner only (key and token files: digests, but still)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Admission:
    """The proxy's gate: which key a request carries, and whether its bucket has a token."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self._by_digest: dict[str, KeyRecord] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._known: dict[str, KeyRecord | None] = {}  # presented key -> record (or unknown)
        self.reload(force=True)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._by_digest.values()]

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed; True if the keys were replaced."""
        try:
            info = self.path.stat()
            stat = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stat = (0, 0, 0)
        if stat == self._stat and not force:
            return False
        try:
            records = read_records(self.path)
        except KeyFileError as exc:
            if force:
                raise
            logger.error("keeping the previous API keys: %s", exc)
            self._stat = stat
            return False
        self._stat = stat
        self._by_digest = {r.sha256: r for r in records}
        # a bucket survives a reload while its key keeps its name and rate
        self._buckets = {
            r.name: old
            if (old := self._buckets.get(r.name)) and (old.rate, old.burst) == (r.rate, r.burst)
            else TokenBucket(r.rate, r.burst)
            for r in records
        }
        self._known.clear()
        logger.info("API keys loaded from %s: %d", self.path, len(records))
        return True

    def admit(self, presented: str | None, now: float) -> Verdict:
        if not presented:
            return Verdict(401, "none")
        record = self._known.get(presented, _UNSEEN)
        if record is _UNSEEN:
            record = self._lookup(presented)
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            self._known[presented] = record
        if record is None:
            return Verdict(401, "unknown")
        wait = self._buckets[record.name].take(now)
        return Verdict(429, record.name, wait) if wait else Verdict(200, record.name)

    def _lookup(self, presented: str) -> KeyRecord | None:
        wanted = digest(presented)
        record = self._by_digest.get(wanted)
        if record is not None and hmac.compare_digest(record.sha256, wanted):
            return record
        return None


_UNSEEN: Any = object()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None
