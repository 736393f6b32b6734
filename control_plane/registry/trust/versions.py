"""Signing, approving and checking stored versions: bundles in the store, records in the
entry.

A bundle's key is `<prefix>/<model>/<commit>.<what>-<sha256[:16]>.sigstore.json`: beside
the version's object, and new for every new bundle, so signing again never overwrites.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from control_plane.core.errors import (
    IntegrityError,
    ObjectNotFoundError,
    SignatureInvalidError,
    UsageError,
)
from control_plane.metadata import ModelEntry
from control_plane.registry.objects import Objects, model_folder
from control_plane.registry.trust import bundles, check
from control_plane.registry.trust.bundles import Content
from control_plane.registry.trust.check import TrustPolicy, TrustReport, Verdict
from control_plane.registry.trust.keys import SigningKey


@dataclass(frozen=True)
class VersionTrust:
    """The registry's trust operations over its objects, under one policy."""

    objects: Objects
    policy: TrustPolicy
    prefix: str

    def content(self, entry: ModelEntry) -> Content:
        """The sha256 of each of the version's files, as recorded (a directory's manifest is
        read and checked against the entry)."""
        if entry.is_tree:
            return Content({f.path: f.sha256 for f in self.objects.manifest(entry).files})
        if not entry.sha256:
            raise UsageError(
                f"{entry.label} has no sha256 recorded, so there is nothing to sign.",
                hint="store the model again from its commit",
            )
        return Content({bundles.SINGLE_FILE: entry.sha256})

    def sign(
        self, entry: ModelEntry, content: Content, key: SigningKey, who: str | None
    ) -> tuple[dict[str, Any], bytes]:
        """Sign the version, upload the bundle; the entry's record and the bundle."""
        data = bundles.sign_content(key, check.subject(entry), content)
        return self._record(entry, check.SIGNATURE, data, key, who), data

    def approve(
        self,
        entry: ModelEntry,
        key: SigningKey,
        decision: str,
        who: str | None,
        when: str,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Sign a statement that `who` gave `decision` on the version at `when`; upload it."""
        predicate: dict[str, Any] = {
            "decision": decision,
            "model": entry.model_name,
            "commit": entry.commit_hash,
            "by": who,
            "when": when,
        }
        if reason:
            predicate["reason"] = reason
        subject = check.subject(entry)
        data = bundles.sign_approval(key, subject, self.content(entry).digest(), predicate)
        record = self._record(entry, check.APPROVAL, data, key, who)
        record["decision"] = decision
        return record

    def report(self, entry: ModelEntry) -> TrustReport:
        """The verdicts on the version's signature and approval (downloads two bundles)."""
        if not (entry.signature or entry.approval):
            return check.judge(entry, Content({}), self.policy, self._read)
        return check.judge(entry, self.content(entry), self.policy, self._read)

    def enforce(self, entry: ModelEntry, report: TrustReport | None = None) -> TrustReport:
        """The report (made here unless given), or the TrustError that keeps this version
        from loading."""
        report = report or self.report(entry)
        check.enforce(entry, report, self.policy)
        return report

    def check_bundle(self, entry: ModelEntry, data: bytes) -> Verdict:
        """A bundle made elsewhere (`model_signing sign`) over this version's bytes."""
        if self.policy.trusted is None:
            raise UsageError(
                "checking a signature file needs trusted_keys: the public keys you trust.",
                hint="set trusted_keys in .nexusrc or NEXUS_TRUSTED_KEYS",
            )
        return check.check_bundle(entry, self.content(entry), data, self.policy.trusted)

    def _record(
        self, entry: ModelEntry, what: str, data: bytes, key: SigningKey, who: str | None
    ) -> dict[str, Any]:
        sha256 = hashlib.sha256(data).hexdigest()
        folder = model_folder(self.prefix, entry.model_name)
        bundle = f"{folder}{entry.commit_hash}.{what}-{sha256[:16]}.sigstore.json"
        self.objects.put_bytes(data, bundle, sha256)
        public = key.public
        return {
            "bundle": bundle,
            "sha256": sha256,
            "signer": public.name,
            "key": public.hint,
            "public_key": public.pem,
            "by": who,
        }

    def _read(self, entry: ModelEntry, what: str, record: dict[str, Any]) -> bytes:
        bundle, sha256 = record.get("bundle"), record.get("sha256")
        if not isinstance(bundle, str):
            raise SignatureInvalidError(f"{entry.label}: the {what} record names no bundle.")
        try:
            return self.objects.read_bytes(bundle, sha256 if isinstance(sha256, str) else None)
        except ObjectNotFoundError:
            raise SignatureInvalidError(
                f"{entry.label}: the {what} bundle {self.objects.backend.uri(bundle)} is "
                "missing from the store."
            ) from None
        except IntegrityError:
            raise SignatureInvalidError(
                f"{entry.label}: the {what} bundle {self.objects.backend.uri(bundle)} is not "
                "the one recorded; it was replaced in the store."
            ) from None
