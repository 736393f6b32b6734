"""Signed versions and signed approvals: the tamper matrix, each case its own error.

Every command here runs `nexus` as a real process with networking taken away: in a
network namespace of its own where `unshare` allows one, and always with a
sitecustomize that makes any socket connection fail. Signing and verifying are
fully offline (keys, no Fulcio, Rekor or OIDC).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from control_plane import Registry
from control_plane.registry.trust.keys import generate
from tests.conftest import commit_all, git

_NO_NETWORK = """\
import socket

def _refuse(*args, **kwargs):
    raise OSError("networking is unavailable to this process (test_trust)")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""
UNSHARE = shutil.which("unshare")
UNTRUSTED, TRUSTED = "mallory", "alice"


def _namespace_works() -> bool:
    if UNSHARE is None:
        return False
    return subprocess.run([UNSHARE, "-rn", "true"], capture_output=True).returncode == 0


OFFLINE_PREFIX = [UNSHARE, "-rn"] if _namespace_works() and UNSHARE else []


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """alice.key (trusted: its .pub is in trusted/) and mallory.key (not trusted)."""
    folder = tmp_path / "keys"
    (folder / "trusted").mkdir(parents=True)
    for name in (TRUSTED, UNTRUSTED):
        generate(folder / f"{name}.key")
    shutil.copy(folder / f"{TRUSTED}.key.pub", folder / "trusted" / f"{TRUSTED}.pub")
    return folder


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    guard = tmp_path / "offline"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(_NO_NETWORK)
    return {**os.environ, "PYTHONPATH": str(guard)}


class Nexus:
    """`nexus ARGS` as a process without networking, in the repository."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.repo, self.env = repo, env

    def __call__(self, *args: str | Path, code: int = 0) -> subprocess.CompletedProcess[str]:
        command = [*OFFLINE_PREFIX, sys.executable, "-m", "control_plane.launcher"]
        done = subprocess.run(
            [*command, *map(str, args)],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done


@pytest.fixture
def nexus(repo: Path, offline_env: dict[str, str]) -> Nexus:
    return Nexus(repo, offline_env)


def store(repo: Path, name: str, payload: bytes, *args: str | Path, nexus: Nexus) -> str:
    """Store `payload` as a new version of m at a new commit; its commit hash."""
    (repo / "train.py").write_text(f"# {name}\n")
    commit = commit_all(repo, f"train {name}")
    path = repo.parent / f"{name}.pt"
    path.write_bytes(payload)
    nexus("store", path, "m", *args)
    commit_all(repo, f"store {name}")
    return commit


def trust(repo: Path, keys: Path, **rules: bool) -> None:
    lines = [
        f"trusted_keys: {keys / 'trusted'}",
        *(f"{k}: {str(v).lower()}" for k, v in rules.items()),
    ]
    (repo / ".nexusrc").write_text("\n".join(lines) + "\n")


def stored_object(repo: Path, commit: str) -> Path:
    entry = Registry(repo).resolve(commit, "m")
    return repo / ".nexus" / "store" / entry.storage_uri


def refused(nexus: Nexus, dest: Path, ref: str = "latest") -> subprocess.CompletedProcess[str]:
    """`nexus load REF DEST` must fail with exit 3 and leave nothing at DEST."""
    failed = nexus("load", ref, dest, "-m", "m", code=3)
    assert not dest.exists()
    return failed


def swap_object(repo: Path, commit: str) -> None:
    """What someone who can write the bucket and the metadata does: other bytes in the
    object, and the entry's sha256 edited to match them."""
    evil = os.urandom(4096)
    stored_object(repo, commit).write_bytes(evil)
    meta = json.loads((repo / ".nexus_meta.json").read_text())
    meta["models"][0]["sha256"] = hashlib.sha256(evil).hexdigest()
    (repo / ".nexus_meta.json").write_text(json.dumps(meta))


def test_the_process_really_has_no_network(nexus: Nexus) -> None:
    probe = "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"
    done = subprocess.run(
        [*OFFLINE_PREFIX, sys.executable, "-c", probe], env=nexus.env, capture_output=True
    )
    assert done.returncode != 0
    assert b"unavailable" in done.stderr or b"unreachable" in done.stderr


def test_a_signed_version_verifies_loads_and_says_by_whom(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    commit = store(repo, "v1", os.urandom(4096), "--sign", "--key", keys / "alice.key", nexus=nexus)
    trust(repo, keys, require_signature=True)
    shown = json.loads(nexus("show", "latest", "--json").stdout)
    assert shown["trust"]["signature"] == {
        "present": True,
        "valid": True,
        "signer": "alice",
        "trusted": True,
        "error": None,
        "reason": None,
    }
    assert shown["signature"]["bundle"].startswith(f"m/{commit}.signature-")
    assert "valid, by alice, a trusted key" in nexus("verify").stdout
    nexus("load", "latest", tmp_path / "out.pt")
    assert (tmp_path / "out.pt").read_bytes() == stored_object(repo, commit).read_bytes()


def test_flipped_byte_in_the_object(repo: Path, keys: Path, nexus: Nexus, tmp_path: Path) -> None:
    commit = store(repo, "v1", os.urandom(4096), "--sign", "--key", keys / "alice.key", nexus=nexus)
    trust(repo, keys, require_signature=True)
    obj = stored_object(repo, commit)
    data = bytearray(obj.read_bytes())
    data[100] ^= 0x01
    obj.write_bytes(bytes(data))
    failed = refused(nexus, tmp_path / "out.pt")
    assert "sha256 is" in failed.stderr
    assert "it was changed in the store" in failed.stderr


def test_object_replaced_and_its_sha256_edited_to_match(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    commit = store(repo, "v1", os.urandom(4096), "--sign", "--key", keys / "alice.key", nexus=nexus)
    trust(repo, keys)
    swap_object(repo, commit)
    failed = refused(nexus, tmp_path / "out.pt")
    assert "the bytes recorded are not the bytes signed" in failed.stderr
    verified = nexus("verify", code=3)
    assert "FAILED" in verified.stdout
    assert "not the bytes signed" in verified.stdout


def test_signature_of_version_a_copied_to_version_b(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    payload = os.urandom(4096)  # the same bytes: only the binding to the commit differs
    store(repo, "a", payload, "--sign", "--key", keys / "alice.key", nexus=nexus)
    store(repo, "b", payload, nexus=nexus)
    trust(repo, keys)
    meta = json.loads((repo / ".nexus_meta.json").read_text())
    a, b = meta["models"]
    b["signature"] = a["signature"]
    (repo / ".nexus_meta.json").write_text(json.dumps(meta))
    failed = refused(nexus, tmp_path / "out.pt", b["commit_hash"][:8])
    assert f"the signature was made for m@{a['commit_hash'][:7]}, not for this version" in (
        failed.stderr
    )


def test_unsigned_version_when_signatures_are_required(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    store(repo, "v1", os.urandom(4096), nexus=nexus)
    trust(repo, keys, require_signature=True)
    failed = refused(nexus, tmp_path / "out.pt")
    assert "is not signed; require_signature is on" in failed.stderr
    assert "is not signed" in nexus("verify", code=3).stdout


def test_version_signed_by_an_untrusted_key(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    store(repo, "v1", os.urandom(4096), "--sign", "--key", keys / "mallory.key", nexus=nexus)
    trust(repo, keys)
    failed = refused(nexus, tmp_path / "out.pt")
    assert "the signature is by key" in failed.stderr
    assert "(mallory), which is not among the trusted keys" in failed.stderr


def test_a_bundle_edited_in_the_store_is_invalid(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    commit = store(repo, "v1", os.urandom(4096), "--sign", "--key", keys / "alice.key", nexus=nexus)
    trust(repo, keys)
    meta = json.loads((repo / ".nexus_meta.json").read_text())
    record = meta["models"][0]["signature"]
    bundle_path = repo / ".nexus" / "store" / record["bundle"]
    bundle = json.loads(bundle_path.read_text())
    sig = bundle["dsseEnvelope"]["signatures"][0]
    sig["sig"] = sig["sig"][:-8] + ("A" * 8 if not sig["sig"].endswith("A" * 8) else "B" * 8)
    bundle_path.write_text(json.dumps(bundle))
    record["sha256"] = hashlib.sha256(bundle_path.read_bytes()).hexdigest()
    (repo / ".nexus_meta.json").write_text(json.dumps(meta))
    failed = refused(nexus, tmp_path / "out.pt", commit[:8])
    assert "the signature does not verify with alice's key" in failed.stderr


def test_approval_signed_by_an_untrusted_key(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    store(repo, "v1", os.urandom(4096), "--sign", "--key", keys / "alice.key", nexus=nexus)
    nexus("approve", "latest", "m", "--key", keys / "mallory.key")
    trust(repo, keys, require_signed_approval=True)
    failed = refused(nexus, tmp_path / "out.pt")
    assert "the approval is by key" in failed.stderr
    assert "(mallory), which is not among the trusted keys" in failed.stderr
    nexus("approve", "latest", "m", "--key", keys / "alice.key")
    nexus("load", "latest", tmp_path / "out.pt")
    shown = nexus("show", "latest").stdout
    assert "approved by alice (Ada Lovelace <ada@example.com>), a trusted key" in shown


def test_require_approval_false_in_nexusrc_does_not_lift_signed_approval(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    store(repo, "v1", os.urandom(4096), nexus=nexus)
    nexus("approve", "latest", "m")  # approved, but not signed
    (repo / ".nexusrc").write_text("require_approval: false\nrequire_signed_approval: false\n")
    env = {
        **nexus.env,
        "NEXUS_TRUSTED_KEYS": str(keys / "trusted"),
        "NEXUS_REQUIRE_SIGNED_APPROVAL": "true",
    }
    failed = refused(Nexus(repo, env), tmp_path / "out.pt")
    assert "has no signed approval; require_signed_approval is on" in failed.stderr


def test_a_signed_rejection_keeps_the_version_out(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    store(repo, "v1", os.urandom(4096), nexus=nexus)
    nexus("reject", "latest", "m", "--reason", "bias found", "--key", keys / "alice.key")
    trust(repo, keys, require_signed_approval=True)
    failed = refused(nexus, tmp_path / "out.pt")
    assert "was rejected by alice" in failed.stderr


def test_an_approval_moved_to_other_bytes_fails(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    commit = store(repo, "v1", os.urandom(4096), nexus=nexus)
    nexus("approve", "latest", "m", "--key", keys / "alice.key")
    trust(repo, keys, require_signed_approval=True)
    swap_object(repo, commit)
    failed = refused(nexus, tmp_path / "out.pt")
    assert "the approval was signed for other bytes" in failed.stderr


def test_a_directory_model_is_signed_file_by_file(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    model = tmp_path / "dir_model"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}')
    (model / "weights" / "w0.bin").write_bytes(os.urandom(2048))
    (repo / "train.py").write_text("# dir\n")
    commit_all(repo, "train dir")
    nexus("store", model, "m", "--sign", "--key", keys / "alice.key")
    trust(repo, keys, require_signature=True)
    nexus("load", "latest", tmp_path / "restored")
    assert (tmp_path / "restored" / "weights" / "w0.bin").read_bytes() == (
        model / "weights" / "w0.bin"
    ).read_bytes()
    nexus("sign", "m@latest", "--key", keys / "alice.key", "--output", tmp_path / "dir.sig")
    _model_signing(
        "verify",
        "key",
        tmp_path / "restored",
        "--signature",
        tmp_path / "dir.sig",
        "--public_key",
        keys / "alice.key.pub",
        env=nexus.env,
    )


def _model_signing(*args: str | Path, env: dict[str, str], code: int = 0) -> str:
    cli = str(Path(sys.executable).with_name("model_signing"))
    done = subprocess.run(
        [*OFFLINE_PREFIX, cli, *map(str, args)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code, (done.stdout, done.stderr)
    return done.stdout + done.stderr


def test_nexus_sign_bundle_verifies_with_model_signing_verify(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    store(repo, "v1", os.urandom(8192), nexus=nexus)
    nexus("sign", "m@latest", "--key", keys / "alice.key", "--output", tmp_path / "model.sig")
    nexus("load", "latest", tmp_path / "model.pt")
    out = _model_signing(
        "verify",
        "key",
        tmp_path / "model.pt",
        "--signature",
        tmp_path / "model.sig",
        "--public_key",
        keys / "alice.key.pub",
        env=nexus.env,
    )
    assert "Verification succeeded" in out
    (tmp_path / "model.pt").write_bytes(b"something else")
    _model_signing(
        "verify",
        "key",
        tmp_path / "model.pt",
        "--signature",
        tmp_path / "model.sig",
        "--public_key",
        keys / "alice.key.pub",
        env=nexus.env,
        code=1,
    )


def test_model_signing_sign_bundle_is_accepted_by_nexus_verify(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    payload = os.urandom(8192)
    store(repo, "v1", payload, nexus=nexus)
    trust(repo, keys)
    (tmp_path / "theirs.pt").write_bytes(payload)
    for signer in (TRUSTED, UNTRUSTED):
        _model_signing(
            "sign",
            "key",
            tmp_path / "theirs.pt",
            "--private_key",
            keys / f"{signer}.key",
            "--signature",
            tmp_path / f"{signer}.sig",
            env=nexus.env,
        )
    ok = nexus("verify", "m@latest", "--signature", tmp_path / "alice.sig")
    assert "valid, by alice, a trusted key" in ok.stdout
    untrusted = nexus("verify", "m@latest", "--signature", tmp_path / "mallory.sig", code=3)
    assert "not among the trusted keys" in untrusted.stdout
    (tmp_path / "other.pt").write_bytes(os.urandom(8192))
    _model_signing(
        "sign",
        "key",
        tmp_path / "other.pt",
        "--private_key",
        keys / "alice.key",
        "--signature",
        tmp_path / "other.sig",
        env=nexus.env,
    )
    other = nexus("verify", "m@latest", "--signature", tmp_path / "other.sig", code=3)
    assert "not the bytes signed" in other.stdout


def test_gc_keeps_bundles_and_signing_never_overwrites(
    repo: Path, keys: Path, nexus: Nexus
) -> None:
    store(repo, "v1", os.urandom(4096), "--sign", "--key", keys / "alice.key", nexus=nexus)
    first = Registry(repo).resolve("latest", "m").signature
    nexus("sign", "m@latest", "--key", keys / "alice.key")
    nexus("approve", "latest", "m", "--key", keys / "alice.key")
    commit_all(repo, "sign again")
    entry = Registry(repo).resolve("latest", "m")
    assert first is not None
    assert entry.signature is not None
    assert entry.approval is not None
    assert entry.signature["bundle"] != first["bundle"]  # ECDSA: a new bundle, a new key
    store_dir = repo / ".nexus" / "store"
    assert (store_dir / first["bundle"]).is_file()  # the earlier bundle was not replaced
    hour_ago = time.time() - 3600  # gc never takes what was written in its last 2 s
    os.utime(store_dir / first["bundle"], (hour_ago, hour_ago))
    nexus("gc", "--grace", "0s", "--yes")
    for record in (entry.signature, entry.approval):
        assert (store_dir / record["bundle"]).is_file()
    assert not (store_dir / first["bundle"]).exists()  # unreferenced once committed over
    trust(repo, keys, require_signature=True, require_signed_approval=True)
    nexus("verify")


def test_bad_keys_and_settings_get_one_sentence(
    repo: Path, keys: Path, nexus: Nexus, tmp_path: Path
) -> None:
    store(repo, "v1", os.urandom(4096), nexus=nexus)
    missing = nexus("sign", "m@latest", code=2)
    assert "signing needs a key: pass --key PATH or set signing_key" in missing.stderr
    (tmp_path / "junk.key").write_text("not a key")
    junk = nexus("sign", "m@latest", "--key", tmp_path / "junk.key", code=2)
    assert "is not a PEM private key" in junk.stderr
    (repo / ".nexusrc").write_text("require_signature: true\n")
    no_keys = nexus("load", "latest", tmp_path / "x.pt", code=1)
    assert "require_signature needs trusted_keys" in no_keys.stderr
    pem = (keys / "alice.key").read_text()
    (repo / ".nexusrc").write_text(f"signing_key: |\n  {pem.replace(chr(10), chr(10) + '  ')}\n")
    secret = nexus("list", code=1)
    assert "holds a private key" in secret.stderr
    (repo / ".nexusrc").write_text(f"signing_key: {keys / 'alice.key'}\n")
    nexus("approve", "latest", "m")  # signing_key alone signs approvals
    assert Registry(repo).resolve("latest", "m").approval is not None
    git(repo, "status", "--short")
