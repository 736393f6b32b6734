"""The registry's tokens: who may change what, from a file of digests (`--tokens FILE`).

`{"tokens": [{"name": ..., "sha256": <hex of the token>, "role": ..., "email": ...}]}`,
written by `nexus keys create NAME --role ROLE --file FILE` (which prints the token once),
like the proxy's key file: the token is never stored in clear, a presented one is hashed
and looked up. The file is re-read when it changes, so a token is added or revoked
without a restart; a file that stops parsing keeps the last good tokens.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.core.errors import TokenFileError
from control_plane.web.roles import Role
from nexus_common.files import read_private_text, write_private_json
from nexus_common.keyfiles import check_digests_and_names, digest

logger = logging.getLogger("nexus.registry")

TOKEN_PREFIX = "nxr_"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


@dataclass(frozen=True)
class TokenRecord:
    name: str
    sha256: str
    role: Role
    email: str

    @property
    def ident(self) -> str:
        """`Name <email>`: the commit author and the history events' `who`."""
        return f"{self.name} <{self.email}>"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "role": self.role.label,
            "email": self.email,
        }


def parse_tokens(text: str, source: str) -> list[TokenRecord]:
    try:
        body = json.loads(text or '{"tokens": []}')
        records = [
            TokenRecord(
                name=str(raw["name"]),
                sha256=str(raw["sha256"]).lower(),
                role=Role.named(str(raw["role"])),
                email=str(raw["email"]),
            )
            for raw in body["tokens"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenFileError(f"{source} is not a token file ({exc}).") from exc
    check_digests_and_names(records, source, TokenFileError, "token")
    for record in records:
        if not _EMAIL.match(record.email):
            raise TokenFileError(f"{source}: token '{record.name}' has no valid email.")
    return records


def read_tokens(path: Path) -> list[TokenRecord]:
    return parse_tokens(read_private_text(path, TokenFileError), str(path))


def add_token(path: Path, name: str, role: Role, email: str) -> str:
    """Make a token, add its record (the digest only) to the file, return the token."""
    records = read_tokens(path)
    if any(r.name == name for r in records):
        raise TokenFileError(f"{path} already has a token named '{name}'.")
    if not name.strip() or any(c in name for c in "<>\n"):
        raise TokenFileError(f"'{name}' is not a usable name (it becomes a commit author).")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(name.strip(), digest(token), role, email)
    parse_tokens(json.dumps({"tokens": [record.to_json()]}), "the new token")  # same checks
    write_private_json(path, {"tokens": [r.to_json() for r in [*records, record]]})
    return token


def revoke_token(path: Path, name: str) -> None:
    records = read_tokens(path)
    if not any(r.name == name for r in records):
        raise TokenFileError(f"{path} has no token named '{name}'.")
    write_private_json(path, {"tokens": [r.to_json() for r in records if r.name != name]})


def is_token_file(path: Path) -> bool:
    """A registry token file (rather than the proxy's key file)?"""
    try:
        return "tokens" in json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return False


class TokenBook:
    """The tokens in force, re-read when the file changes (checked on each look-up)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_digest: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._reload()

    def lookup(self, presented: str | None) -> TokenRecord | None:
        if not presented:
            return None
        self._reload()
        return self._by_digest.get(digest(presented))

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp == self._stamp and self._stamp is not None:
                return
            try:
                records = read_tokens(self.path)
            except TokenFileError as exc:
                logger.warning("%s; keeping the %d tokens read before", exc, len(self._by_digest))
                return
            self._by_digest = {r.sha256: r for r in records}
            self._stamp = stamp
