"""Verdicts on a version's signature and signed approval, and the policy that acts on them.

Each failure is its own error, named for its cause: unsigned, signature invalid,
signature for another version, signer not trusted, bytes changed. With trusted keys
configured a signature must verify with one of them; without, it is checked against
the public key recorded beside it (which catches corruption, a moved signature and
changed bytes, but says nothing of who signed), and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.core.errors import (
    BundleError,
    ConfigError,
    ContentChangedError,
    SignatureInvalidError,
    TrustError,
    UnsignedError,
    UntrustedSignerError,
    WrongVersionError,
)
from control_plane.metadata import ModelEntry
from control_plane.registry.trust import bundles
from control_plane.registry.trust.bundles import Content, Signed
from control_plane.registry.trust.keys import PublicKey, TrustedKeys

SIGNATURE = "signature"
APPROVAL = "approval"
APPROVED = "approved"

BundleReader = Callable[[ModelEntry, str, dict[str, Any]], bytes]
"""Fetches a record's bundle; raises a TrustError (with the version's label) if it cannot."""


@dataclass(frozen=True)
class TrustPolicy:
    """What must hold before a version loads: from `.nexusrc` under NEXUS_* (a server's
    environment wins over the repository's file)."""

    trusted: TrustedKeys | None = None
    require_signature: bool = False
    require_signed_approval: bool = False

    @classmethod
    def build(
        cls,
        trusted_keys: Path | None,
        *,
        require_signature: bool = False,
        require_signed_approval: bool = False,
    ) -> TrustPolicy:
        trusted = TrustedKeys.read(trusted_keys) if trusted_keys is not None else None
        for name, on in (
            ("require_signature", require_signature),
            ("require_signed_approval", require_signed_approval),
        ):
            if on and trusted is None:
                raise ConfigError(
                    f"{name} needs trusted_keys: a folder of the public keys allowed to sign.",
                    hint="set trusted_keys in .nexusrc or NEXUS_TRUSTED_KEYS",
                )
        return cls(trusted, require_signature, require_signed_approval)


@dataclass(frozen=True)
class Verdict:
    """One signature's (or approval's) state: missing, valid by a key, or failed."""

    what: str
    present: bool
    signer: str | None = None
    trusted: bool = False
    error: TrustError | None = None
    predicate: dict[str, Any] | None = None

    @property
    def decision(self) -> str | None:
        return (self.predicate or {}).get("decision")

    def describe(self) -> str:
        if not self.present:
            return "none"
        if self.error is not None:
            return f"FAILED: {self.error.message}"
        prefix = f"{self.decision} " if self.what == APPROVAL else "valid, "
        by = f"by {self.signer}"
        if self.what == APPROVAL and (self.predicate or {}).get("by"):
            by += f" ({self.predicate['by']})"  # type: ignore[index]
        if self.trusted:
            return f"{prefix}{by}, a trusted key"
        return f"{prefix}{by}; not checked against trusted keys (none configured)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "valid": self.present and self.error is None,
            "signer": self.signer,
            "trusted": self.trusted,
            "error": self.error.message if self.error else None,
            "reason": type(self.error).__name__ if self.error else None,
            **({"decision": self.decision} if self.what == APPROVAL and self.present else {}),
        }


@dataclass(frozen=True)
class TrustReport:
    signature: Verdict
    approval: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {SIGNATURE: self.signature.to_dict(), APPROVAL: self.approval.to_dict()}


def subject(entry: ModelEntry) -> str:
    """What a signature of this version names: `MODEL@COMMIT`."""
    return f"{entry.model_name}@{entry.commit_hash}"


def judge(
    entry: ModelEntry, content: Content, policy: TrustPolicy, read: BundleReader
) -> TrustReport:
    """Check the version's signature and approval (whichever it has): never raises a
    TrustError, it reports one."""
    return TrustReport(
        _judge(SIGNATURE, entry, content, policy, read),
        _judge(APPROVAL, entry, content, policy, read),
    )


def enforce(entry: ModelEntry, report: TrustReport, policy: TrustPolicy) -> None:
    """Raise the first reason this version may not load, or return."""
    for verdict in (report.signature, report.approval):
        if verdict.error is not None:
            raise verdict.error
    if policy.require_signature and not report.signature.present:
        raise UnsignedError(
            f"{entry.label} is not signed; require_signature is on, so only signed versions load.",
            hint=f"nexus sign {entry.model_name}@{entry.short_hash} --key KEY",
        )
    if policy.require_signed_approval:
        if not report.approval.present:
            raise UnsignedError(
                f"{entry.label} has no signed approval; require_signed_approval is on, so "
                "only versions approved with a trusted key load.",
                hint=f"nexus approve {entry.short_hash} --model {entry.model_name} --key KEY",
            )
        if report.approval.decision != APPROVED:
            raise TrustError(
                f"{entry.label} was {report.approval.decision} by {report.approval.signer}; "
                "require_signed_approval is on, so it does not load."
            )


def check_bundle(entry: ModelEntry, content: Content, data: bytes, trusted: TrustedKeys) -> Verdict:
    """A bundle from elsewhere (say `model_signing sign`) over this version's bytes: its key
    must be trusted and the files it lists must be this version's. Its subject is the
    signer's file name, so only the content binds it."""
    try:
        key = _trusted_key(entry, data, trusted, SIGNATURE, None)
        signed = _verify(entry, data, key, SIGNATURE)
        _check_files(entry, content, signed)
    except TrustError as exc:
        return Verdict(SIGNATURE, True, error=exc)
    return Verdict(SIGNATURE, True, key.name, True)


def _judge(
    what: str, entry: ModelEntry, content: Content, policy: TrustPolicy, read: BundleReader
) -> Verdict:
    record = entry.data.get(what)
    if not isinstance(record, dict):
        return Verdict(what, False)
    signer = None
    try:
        data = read(entry, what, record)
        if policy.trusted is not None:
            key = _trusted_key(entry, data, policy.trusted, what, record.get("signer"))
        else:
            key = _recorded_key(entry, data, record, what)
        signer = key.name
        signed = _verify(entry, data, key, what)
        if signed.subject != subject(entry):
            raise WrongVersionError(
                f"{entry.label}: the {what} was made for {_short(signed.subject)}, not for this "
                "version; it was copied from another one.",
                hint=f"sign this version: nexus sign {entry.model_name}@{entry.short_hash}",
            )
        if what == SIGNATURE:
            _check_files(entry, content, signed)
        elif signed.digest != content.digest():
            raise ContentChangedError(
                f"{entry.label}: the approval was signed for other bytes than those recorded "
                "now; the object or its sha256 was changed after approval.",
                hint="verify the version, then approve it again",
            )
    except TrustError as exc:
        return Verdict(what, True, signer, policy.trusted is not None, exc)
    return Verdict(what, True, signer, policy.trusted is not None, predicate=signed.predicate)


def _trusted_key(
    entry: ModelEntry, data: bytes, trusted: TrustedKeys, what: str, recorded: Any
) -> PublicKey:
    hint = _hint(entry, data, what)
    key = trusted.find(hint) if hint else None
    if key is None:
        named = f" ({recorded})" if isinstance(recorded, str) else ""
        raise UntrustedSignerError(
            f"{entry.label}: the {what} is by key {(hint or 'unknown')[:12]}…{named}, which is "
            f"not among the trusted keys in {trusted.source}.",
            hint="add the signer's public key to trusted_keys if you trust it",
        )
    return key


def _recorded_key(entry: ModelEntry, data: bytes, record: dict[str, Any], what: str) -> PublicKey:
    pem, name = record.get("public_key"), record.get("signer")
    hint = _hint(entry, data, what)
    if not isinstance(pem, str):
        raise SignatureInvalidError(f"{entry.label}: the {what} record names no public key.")
    key = PublicKey(name if isinstance(name, str) else "unnamed key", pem)
    if hint is not None and hint != key.hint:
        raise SignatureInvalidError(
            f"{entry.label}: the {what} bundle names another key than the one recorded."
        )
    return key


def _hint(entry: ModelEntry, data: bytes, what: str) -> str | None:
    try:
        return bundles.signer_hint(data)
    except BundleError as exc:
        raise SignatureInvalidError(f"{entry.label}: the {what} cannot be read: {exc}.") from None


def _verify(entry: ModelEntry, data: bytes, key: PublicKey, what: str) -> Signed:
    try:
        return bundles.verify(data, key)
    except (BundleError, ValueError) as exc:
        raise SignatureInvalidError(
            f"{entry.label}: the {what} does not verify with {key.name}'s key: {exc}.",
            hint="the bundle was altered; sign the version again",
        ) from None


def _check_files(entry: ModelEntry, content: Content, signed: Signed) -> None:
    assert signed.files is not None
    ours = {name: sha for name, sha in content.files.items() if not _ignored(name, signed.ignored)}
    if ours == signed.files:
        return
    names = ours.keys() | signed.files.keys()
    changed = sorted(name for name in names if ours.get(name) != signed.files.get(name))
    shown = ", ".join("the file" if n == bundles.SINGLE_FILE else n for n in changed[:3])
    raise ContentChangedError(
        f"{entry.label}: the bytes recorded are not the bytes signed ({shown}"
        f"{' …' if len(changed) > 3 else ''} differ); the object and its sha256 were changed "
        "after signing.",
        hint="restore the signed object, or sign the version again if the change is yours",
    )


def _ignored(name: str, ignored: tuple[str, ...]) -> bool:
    parts = name.split("/")
    return any("/".join(parts[:n]) in ignored for n in range(1, len(parts) + 1))


def _short(signed_subject: str) -> str:
    model, sep, commit = signed_subject.rpartition("@")
    return f"{model}@{commit[:7]}" if sep and len(commit) > 7 else signed_subject
