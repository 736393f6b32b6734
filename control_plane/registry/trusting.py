"""A registry's trust: signing versions and approvals, and checking them under the policy the
settings set (`trusted_keys`, `require_signature`, `require_signed_approval`).

model-signing is imported only when a version has something signed or the policy
requires it: serving and listing unsigned versions never load it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_plane.core.errors import ConfigError, NexusError, TrustError, UsageError
from control_plane.metadata import ModelEntry
from control_plane.registry import lifecycle
from control_plane.registry.objects import Objects
from control_plane.registry.store import Signer, StoreRequest

if TYPE_CHECKING:
    from control_plane.registry.trust.check import TrustReport, Verdict
    from control_plane.registry.trust.keys import SigningKey
    from control_plane.registry.trust.versions import VersionTrust
    from control_plane.settings import NexusConfig


@dataclass(frozen=True)
class VerifyResult:
    """One version checked: its bytes and, where it has them, its signature and approval."""

    entry: ModelEntry
    error: NexusError | None
    trust: TrustReport | None = None


class RegistryTrust:
    def __init__(
        self,
        config: Callable[[], NexusConfig],
        root: Path,
        objects: Callable[[], Objects],
        who: Callable[[], str | None],
    ) -> None:
        self._config = config
        self._root = root
        self._objects = objects
        self._who = who

    @functools.cached_property
    def versions(self) -> VersionTrust:
        """Signing and checking under this registry's policy (model-signing loads here)."""
        try:
            from control_plane.registry.trust.check import TrustPolicy
            from control_plane.registry.trust.versions import VersionTrust
        except ImportError as exc:
            raise ConfigError(
                f"signatures need the model-signing package ({exc.name} is missing).",
                hint="pip install 'nexusml[sign]'",
            ) from None
        config = self._config()
        keys = config.repo_path(config.trusted_keys, self._root) if config.trusted_keys else None
        policy = TrustPolicy.build(
            keys,
            require_signature=config.require_signature,
            require_signed_approval=config.require_signed_approval,
        )
        return VersionTrust(self._objects(), policy, config.prefix)

    def applies(self, entry: ModelEntry) -> bool:
        """The version has something signed, or the policy requires it to."""
        config = self._config()
        return bool(
            entry.signature
            or entry.approval
            or config.require_signature
            or config.require_signed_approval
        )

    def check(self, entry: ModelEntry) -> TrustReport | None:
        """Raise the TrustError that keeps `entry` from loading; None when the version has
        nothing signed and nothing is required (no bundle is read, model-signing not loaded)."""
        return self.versions.enforce(entry) if self.applies(entry) else None

    def report(self, entry: ModelEntry) -> TrustReport | None:
        """The verdicts on what the version has signed (None: nothing), without the policy."""
        if not (entry.signature or entry.approval):
            return None
        return self.versions.report(entry)

    def verified(
        self, checked: Sequence[tuple[ModelEntry, NexusError | None]]
    ) -> list[VerifyResult]:
        """Versions whose bytes were checked, each with its signature and approval judged
        under the policy (a failure of either is the version's error)."""
        results = []
        for entry, error in checked:
            report: TrustReport | None = None
            failure: NexusError | None = error
            if error is None and self.applies(entry):
                report = self.versions.report(entry)  # once: the verdicts and the refusal
                try:
                    self.versions.enforce(entry, report)
                except TrustError as exc:
                    failure = exc
            results.append(VerifyResult(entry, failure, report))
        return results

    def signing_key(self, path: Path | None) -> SigningKey:
        """The key named by `--key`, else `signing_key` in the settings."""
        from control_plane.registry.trust.keys import SigningKey

        config = self._config()
        chosen = path or (
            config.repo_path(config.signing_key, self._root) if config.signing_key else None
        )
        if chosen is None:
            raise UsageError(
                "signing needs a key: pass --key PATH or set signing_key in .nexusrc.",
                hint="make one with 'nexus keygen ~/.nexus/me.key'",
            )
        return SigningKey.read(chosen)

    def signer(self, request: StoreRequest) -> Signer | None:
        """What signs a new version: with `--sign`, `--key` or `signing_key` set; the key is
        read now, so a bad one fails before any byte is hashed or uploaded."""
        if not (request.sign or request.signing_key or self._config().signing_key):
            return None
        from control_plane.registry.trust.bundles import Content

        key, versions, who = self.signing_key(request.signing_key), self.versions, self._who()
        return lambda entry, files: versions.sign(entry, Content(files), key, who)[0]

    def sign(self, entry: ModelEntry, key: Path | None) -> tuple[dict[str, Any], bytes]:
        """A signature over the version's recorded sha256s (nothing is downloaded), stored
        beside its object: the entry's record and the bundle."""
        signing_key = self.signing_key(key)
        versions = self.versions
        return versions.sign(entry, versions.content(entry), signing_key, self._who())

    def signs(self, key: Path | None) -> bool:
        """A decision is signed with `key`, or with `signing_key` when the settings set one."""
        return key is not None or bool(self._config().signing_key)

    def approval(
        self, entry: ModelEntry, key: Path | None, status: str, reason: str | None
    ) -> dict[str, Any]:
        """A signed approval (or rejection) of the version, with `key` or `signing_key`."""
        signing_key = self.signing_key(key)
        when = lifecycle.event_time()
        return self.versions.approve(entry, signing_key, status, self._who(), when, reason)

    def check_bundle(self, entry: ModelEntry, data: bytes) -> Verdict:
        """A bundle made elsewhere (say `model_signing sign`), checked against the version."""
        return self.versions.check_bundle(entry, data)
