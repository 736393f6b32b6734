"""Trust: signed versions and signed approvals, in the OpenSSF model-signing format.

    keys.py        signing keys (EC private keys, PEM) and the trusted public keys
    bundles.py     what is signed (model name, commit, every file's sha256) and the
                   Sigstore bundles that carry it, made and read with `model_signing`
    check.py       the verdicts: valid by whom, missing, or the one named reason it fails

Nothing here hashes model bytes: a signature covers the sha256s the registry has
already checked, so verifying one costs a bundle read and one ECDSA check.
"""
