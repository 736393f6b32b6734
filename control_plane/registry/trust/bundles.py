"""What is signed, and the Sigstore bundles that carry it, made and read with model-signing.

A version's signature is a model-signing v1.0 statement: one resource per file with the
sha256 the registry already checked (`.` for a single-file model, as `model_signing`
names it), and the subject named `MODEL@COMMIT`. So `model_signing verify` accepts the
bundle for the downloaded bytes unchanged, and a signature moved onto another version
names the version it was made for. An approval is an in-toto statement of our own
predicate type about the same subject and content digest, in the same bundle format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from in_toto_attestation.v1 import resource_descriptor, statement
from model_signing import manifest as ms_manifest
from model_signing._hashing import hashing as ms_hashing
from model_signing._signing import sign_ec_key, sign_sigstore_pb, signing
from sigstore_models.bundle import v1 as bundle_pb

from control_plane.core.errors import BundleError
from control_plane.registry.trust.keys import PublicKey, SigningKey

APPROVAL_TYPE = "https://nexusml.dev/approval/v1"
SINGLE_FILE = "."  # model-signing's name for the one resource of a single-file model
_NO_IGNORED_PATHS: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Content:
    """A version's bytes as the registry knows them: file name -> sha256, already checked."""

    files: dict[str, str]

    def manifest(self, subject: str) -> ms_manifest.Manifest:
        serialization = ms_manifest._FileSerialization("sha256", False, _NO_IGNORED_PATHS)
        items = [
            ms_manifest.FileManifestItem(
                path=PurePosixPath(name), digest=ms_hashing.Digest("sha256", bytes.fromhex(sha))
            )
            for name, sha in sorted(self.files.items())
        ]
        return ms_manifest.Manifest(subject, items, serialization)

    def digest(self) -> str:
        """model-signing's root digest: sha256 over the files' digests in name order."""
        payload = signing.Payload(self.manifest(""))
        return str(payload.statement.pb.subject[0].digest["sha256"])


@dataclass(frozen=True)
class Signed:
    """What a verified bundle says: its subject name and the files it covers (or, for an
    approval, the statement's predicate)."""

    subject: str
    files: dict[str, str] | None
    ignored: tuple[str, ...]
    digest: str | None
    predicate: dict[str, Any]


def sign_content(key: SigningKey, subject: str, content: Content) -> bytes:
    """A model-signing bundle over `content`, named `subject`."""
    return _sign(key, signing.Payload(content.manifest(subject)))


def sign_approval(key: SigningKey, subject: str, digest: str, predicate: dict[str, Any]) -> bytes:
    """A bundle of an approval statement (decision, by, when) about `subject`."""
    payload = _Statement(
        statement.Statement(
            subjects=[
                resource_descriptor.ResourceDescriptor(name=subject, digest={"sha256": digest}).pb
            ],
            predicate_type=APPROVAL_TYPE,
            predicate=predicate,
        )
    )
    return _sign(key, payload)


def signer_hint(data: bytes) -> str | None:
    """The public key hint a bundle names (None for certificate bundles or old ones)."""
    hint = _parse(data).bundle.verification_material.public_key
    return (hint.hint or None) if hint is not None else None


def verify(data: bytes, key: PublicKey) -> Signed:
    """Check the bundle's signature with `key` and return what it signs."""
    signature = _parse(data)
    try:
        payload_type, raw = _KeyVerifier(key.load())._verify_signed_content(signature)
    except (InvalidSignature, ValueError) as exc:
        raise BundleError(str(exc) or "the signature does not match the signed statement") from None
    if payload_type != signing._IN_TOTO_JSON_PAYLOAD_TYPE:
        raise BundleError(f"the bundle carries {payload_type}, not an in-toto statement")
    try:
        body = json.loads(raw)
        if body["_type"] != signing._IN_TOTO_STATEMENT_TYPE:
            raise BundleError(f"the bundle carries {body['_type']}, not an in-toto statement")
        subject = body["subject"][0]
        if body["predicateType"] == APPROVAL_TYPE:
            return Signed(subject["name"], None, (), subject["digest"]["sha256"], body["predicate"])
        signed = signing.dsse_payload_to_manifest(body)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BundleError(f"the signed statement is not one nexus reads ({exc})") from None
    serialization = signed.serialization_type
    files = {}
    for item in signed.resource_descriptors():
        if item.digest.algorithm != "sha256":
            raise BundleError(
                f"the bundle hashes with {item.digest.algorithm}; nexus checks sha256 "
                "signatures (model_signing sign --hash_type sha256 ...)"
            )
        files[item.identifier] = item.digest.digest_hex
    return Signed(
        signed.model_name,
        files,
        tuple(str(p) for p in serialization.get("ignore_paths", ())),
        None,
        {},
    )


def _sign(key: SigningKey, payload: signing.Payload) -> bytes:
    signature = sign_ec_key.Signer(key.path).sign(payload)
    assert isinstance(signature, sign_sigstore_pb.Signature)
    return signature.bundle.to_json().encode()


def _parse(data: bytes) -> sign_sigstore_pb.Signature:
    """A bundle from its JSON, as `sign_sigstore_pb.Signature.read` reads one from a file."""
    try:
        parsed = json.loads(data)
        material = parsed["verificationMaterial"]
        material.setdefault("tlogEntries", [])
        if "publicKey" in material:
            material["publicKey"].setdefault("hint", None)
        return sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(parsed))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"not a Sigstore bundle ({exc})") from None


class _Statement(signing.Payload):
    """A payload for a statement of our own (the signer only reads `.statement`)."""

    def __init__(self, body: statement.Statement) -> None:
        self.statement = body


class _KeyVerifier(sign_ec_key.Verifier):
    """model-signing's key verifier, over a key in memory rather than a file."""

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._public_key = key
