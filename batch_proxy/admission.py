"""Who may use the proxy, and how fast: API keys and a token bucket per key.

The key file (`--api-keys FILE`) is nexus_common.keyfiles' format (`nexus keys create`
writes it). Keys are never in the file in clear: a presented key is hashed and the digest
compared in constant time.
The file is re-read when it changes (checked every `RELOAD_INTERVAL_S`), so a key is
added or revoked without a restart; a file that stops parsing keeps the last good keys
and logs why.
`models` is kept for per-model routing (one queue per model); a single-model proxy
admits by key and rate alone.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus_common.keyfiles import KeyFileError, KeyRecord, digest, read_records

logger = logging.getLogger("nexus.proxy")

RELOAD_INTERVAL_S = 0.5
_CACHE_LIMIT = 4096  # presented keys remembered (valid or not) between reloads


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
class Verdict:
    """What admission decided: 200 (admitted), 401 or 429, for which key, and the wait."""

    status: int
    key_name: str
    retry_after_s: float = 0.0


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
