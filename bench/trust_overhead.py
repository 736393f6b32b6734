"""What a signature costs at load time, on a 256 MiB model in the local store.

    python bench/trust_overhead.py [--size-mib 256] [--runs 5]

Side by side, each the best of --runs:
- today's integrity check: sha256 of the downloaded file against the entry (`verify_file`);
- nexus's signature check (`Registry.check_trust`): read the bundle from the store, check
  its ECDSA signature with the trusted key, compare the signed sha256s with the entry's.
  It does not hash the model: the bytes were just hashed by the integrity check;
- the same plus a signed approval (two bundles);
- the raw baseline a tool without known digests pays: `model_signing`'s own verify,
  which hashes the file again.
The ideal overhead is 0; the target is under 5 ms beyond the sha256 check. The one-time
import of model-signing (per process) is reported apart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, save, table
from tests.harness.repos import git_repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    import model_signing  # noqa: F401  # the one-time cost, measured on its own

    import_s = time.perf_counter() - started

    from control_plane import Registry
    from control_plane.registry.objects import verify_file
    from control_plane.registry.trust.keys import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        keys = root / "keys"
        (keys / "trusted").mkdir(parents=True)
        generate(keys / "alice.key")
        (keys / "alice.key.pub").rename(keys / "trusted" / "alice.pub")
        model = root / "model.bin"
        with model.open("wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(1 << 20))
        (repo / ".nexusrc").write_text(f"trusted_keys: {keys / 'trusted'}\n")
        registry = Registry(repo)
        entry = registry.store(model, "big", sign=True, signing_key=keys / "alice.key").entry
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-qm", "store"], cwd=repo, check=True)
        local = repo / ".nexus" / "store" / entry.storage_uri

        sha_s = best_of(args.runs, lambda _: verify_file(local, entry), settle=False)
        registry = Registry(repo)
        entry = registry.resolve("latest", "big")
        registry.check_trust(entry)  # warm: keys parsed, classes loaded
        sig_s = best_of(args.runs, lambda _: registry.check_trust(entry), settle=False)
        registry.approve("latest", "big", key=keys / "alice.key")
        registry = Registry(repo)
        approved = registry.resolve("latest", "big")
        both_s = best_of(args.runs, lambda _: registry.check_trust(approved), settle=False)
        bundle = root / "model.sig"
        bundle.write_bytes(registry.sign("big@latest", key=keys / "alice.key")[1])
        raw_s = best_of(
            args.runs, lambda _: _model_signing_verify(local, bundle, keys), settle=False
        )

    rows = [
        ["sha256 check (today)", f"{sha_s * 1e3:.1f}", "-", "baseline"],
        ["+ signature (nexus)", f"{(sha_s + sig_s) * 1e3:.1f}", f"{sig_s * 1e3:.2f}", "< 5 ms"],
        ["+ signature + approval", f"{(sha_s + both_s) * 1e3:.1f}", f"{both_s * 1e3:.2f}", ""],
        ["model_signing verify (rehash)", f"{(sha_s + raw_s) * 1e3:.1f}", f"{raw_s * 1e3:.1f}", ""],
        ["ideal", f"{sha_s * 1e3:.1f}", "0.00", ""],
    ]
    print(f"{args.size_mib} MiB model, best of {args.runs}; one-time import {import_s:.2f} s")
    print(table(["load-time check", "total ms", "overhead ms", "target"], rows))
    path = save(
        "trust_overhead",
        {
            "size_mib": args.size_mib,
            "runs": args.runs,
            "sha256_check_ms": sha_s * 1e3,
            "signature_overhead_ms": sig_s * 1e3,
            "signature_and_approval_overhead_ms": both_s * 1e3,
            "model_signing_rehash_verify_ms": raw_s * 1e3,
            "model_signing_import_s": import_s,
            "target_overhead_ms": 5.0,
        },
    )
    print(f"saved {path}")


def _model_signing_verify(model: Path, bundle: Path, keys: Path) -> None:
    from model_signing import verifying

    config = verifying.Config().use_elliptic_key_verifier(public_key=keys / "trusted/alice.pub")
    config.verify(model, bundle)


if __name__ == "__main__":
    main()
