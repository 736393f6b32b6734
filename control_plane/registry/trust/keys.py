"""Signing keys and trusted keys: PEM files named by path, never key material in config.

A key is known by its hint, the sha256 of its public key's PEM (SubjectPublicKeyInfo):
the identifier `model_signing` writes into every bundle it makes with a key.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from control_plane.core.errors import ConfigError, UsageError

SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
PUBLIC_SUFFIXES = (".pub", ".pem")


@dataclass(frozen=True)
class PublicKey:
    """A public key as the registry records and matches it."""

    name: str
    pem: str

    @property
    def hint(self) -> str:
        return key_hint(self.pem.encode())

    def load(self) -> ec.EllipticCurvePublicKey:
        return _check_curve(serialization.load_pem_public_key(self.pem.encode()), self.name)


def key_hint(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class SigningKey:
    """An EC private key read from a PEM file (P-256, P-384 or P-521, as model-signing
    supports), with the public half the bundle names."""

    path: Path
    private: ec.EllipticCurvePrivateKey

    @classmethod
    def read(cls, path: Path) -> SigningKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read signing key {path}: {exc.strerror}.") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise UsageError(
                f"{path} is encrypted; nexus signs with an unencrypted key kept outside the "
                "repository (chmod 600).",
                hint="openssl ec -in KEY -out PLAIN_KEY, or nexus keygen a new one",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise UsageError(
                f"{path} is not a PEM private key.", hint="make one with 'nexus keygen PATH'"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(
                f"{path} is not an elliptic-curve key; model-signing signs with EC keys "
                f"({', '.join(SUPPORTED_CURVES)}).",
                hint="make one with 'nexus keygen PATH'",
            )
        _check_curve(key.public_key(), str(path))
        return cls(path, key)

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.path.stem, public_pem(self.private.public_key()))


def generate(path: Path) -> PublicKey:
    """Write a new P-256 private key to `path` (mode 600) and its public key beside it
    (`path.pub`); neither file is replaced if it exists."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = PublicKey(path.stem, public_pem(key.public_key()))
    pub_path = path.with_name(path.name + ".pub")
    for target in (path, pub_path):
        if target.exists():
            raise UsageError(f"{target} exists; it will not be overwritten.")
    _write_new(path, private, 0o600)
    _write_new(pub_path, public.pem.encode(), 0o644)
    return public


class TrustedKeys:
    """The public keys in a directory (`*.pub`, `*.pem`), each named by its file's stem:
    `alice.pub` signs as "alice"."""

    def __init__(self, keys: list[PublicKey], source: Path | None = None) -> None:
        self.source = source
        self._by_hint = {key.hint: key for key in keys}

    @classmethod
    def read(cls, folder: Path) -> TrustedKeys:
        if not folder.is_dir():
            raise ConfigError(
                f"trusted_keys {folder} is not a directory.",
                hint="point trusted_keys (or NEXUS_TRUSTED_KEYS) at a folder of public keys",
            )
        keys = []
        for path in sorted(folder.iterdir()):
            if path.suffix not in PUBLIC_SUFFIXES or not path.is_file():
                continue
            try:
                loaded = serialization.load_pem_public_key(path.read_bytes())
            except (ValueError, UnsupportedAlgorithm):
                raise ConfigError(f"trusted key {path} is not a PEM public key.") from None
            keys.append(PublicKey(path.stem, public_pem(_check_curve(loaded, str(path)))))
        if not keys:
            raise ConfigError(
                f"trusted_keys {folder} holds no public key (*.pub or *.pem).",
                hint="copy each signer's KEY.pub there",
            )
        return cls(keys, folder)

    def find(self, hint: str) -> PublicKey | None:
        return self._by_hint.get(hint)

    def __len__(self) -> int:
        return len(self._by_hint)


def _check_curve(key: object, name: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
        raise UsageError(
            f"{name}: model-signing verifies EC keys on {', '.join(SUPPORTED_CURVES)} only."
        )
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}.") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)
