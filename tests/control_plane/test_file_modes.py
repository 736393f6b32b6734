"""What the registry writes for others to read is readable by another user; secrets are not.

The CLI runs as this user with a login shell's umask (022); every file it leaves in the
workspace, the local store and a load's destination is then read as nobody, as a model
server in a container (another uid) reads the workspace.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import commit_all, make_repo
from tests.other_user import unreadable_by_nobody, why_not


def nexus(repo: Path, *args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.launcher", *map(str, args)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def written(root: Path) -> list[Path]:
    """Every file and folder under `root`, Git's own folder left out."""
    return [p for p in root.rglob("*") if ".git" not in p.relative_to(root).parts]


def test_every_file_the_registry_writes_is_readable_by_another_user(shared_tmp: Path) -> None:
    repo = make_repo(shared_tmp / "project")
    events = shared_tmp / "events.jsonl"
    (repo / ".nexusrc").write_text(f"events_file: {events}\n")
    commit_all(repo, "initial")
    (shared_tmp / "model.pt").write_bytes(os.urandom(4096))
    folder = shared_tmp / "tokenizer"
    (folder / "vocab").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "vocab" / "words.txt").write_text("a\nb\n")
    key = shared_tmp / "keys" / "ada.key"
    key.parent.mkdir()

    nexus(repo, "store", shared_tmp / "model.pt", "net")
    nexus(repo, "store", folder, "tok")
    commit_all(repo, "store")
    nexus(repo, "list")
    nexus(repo, "keygen", key)
    nexus(repo, "sign", "net@v1", "--key", key, "--output", shared_tmp / "net.sigstore.json")
    nexus(repo, "load", "latest", shared_tmp / "loaded.pt", "--model-name", "net")
    nexus(repo, "load", "latest", shared_tmp / "loaded-tok", "--model-name", "tok")

    secrets = {key}
    paths = [p for p in written(shared_tmp) if p not in secrets]
    names = {p.relative_to(shared_tmp).as_posix() for p in paths}
    for expected in (
        "project/.nexus_meta.json",
        "project/.nexus/list-index",
        "project/.nexus/list-rendered",
        "events.jsonl",
        "net.sigstore.json",
        "loaded.pt",
        "loaded-tok/vocab/words.txt",
        "keys/ada.key.pub",
    ):
        assert expected in names, sorted(names)
    assert any(n.startswith("project/.nexus/store/net/") and n.endswith(".pt") for n in names)
    assert any(n.endswith(".sigstore.json") and "/store/" in n for n in names), sorted(names)
    assert any(n.startswith("project/.nexus/manifests/") for n in names), sorted(names)
    # The mode bits say it everywhere; reading as another uid shows it where we can switch.
    private = [p for p in paths if not p.stat().st_mode & stat.S_IROTH]
    assert private == [], private
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    reason = why_not()
    if reason is not None:
        print(f"not read as another uid: {reason}")
        return
    assert unreadable_by_nobody(paths) == []
    assert unreadable_by_nobody([key]) == [key.as_posix()]


def test_the_mode_follows_the_umask(shared_tmp: Path) -> None:
    """As `open()` would: a stricter umask gives a stricter file."""
    from nexus_common.files import atomic_write

    os.umask(0o077)
    atomic_write(shared_tmp / "private.json", b"{}")
    os.umask(0o022)
    atomic_write(shared_tmp / "shared.json", b"{}")
    assert stat.S_IMODE((shared_tmp / "private.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((shared_tmp / "shared.json").stat().st_mode) == 0o644
