"""Another user on this machine: the model server in a container (uid 10001) reading a
workspace that the CLI wrote as the host's user, or a CI user's files read by a serving one.

Switching users needs root (CI runs as root); elsewhere `why_not` says why it is skipped.
This environment's interpreter may lie under a folder only root may enter (pyenv in
/root); another user then runs the same Python version from the system, with this
environment's packages on its path (`python_as_nobody`).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

NOBODY = 65534


_BOOT = "import runpy, site, sys; site.addsitedir(sys.argv.pop(1)); "


def _others_may_run(path: Path) -> bool:
    """Every folder above `path` may be entered, and `path` run, by any user."""
    path = path.resolve()
    folders_ok = all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    return folders_ok and bool(path.stat().st_mode & stat.S_IXOTH)


def _python_for_others() -> Path | None:
    if _others_may_run(Path(sys.executable)):
        return Path(sys.executable)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(version, path="/usr/local/bin:/usr/bin")
    return Path(found) if found and _others_may_run(Path(found)) else None


def why_not() -> str | None:
    """Why this process cannot run a command as another user, or None when it can."""
    if os.geteuid() != 0:
        return "switching to another uid needs root (CI runs as root)"
    if _python_for_others() is None:
        return f"no python{sys.version_info[0]}.{sys.version_info[1]} another user may run"
    return None


def python_as_nobody(module: str) -> list[str]:
    """The command that runs `python -m module` for another user (see the docstring)."""
    python = _python_for_others()
    assert python is not None, why_not()
    site_packages = sysconfig.get_paths()["purelib"]
    run = f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [str(python), "-c", _BOOT + run, site_packages]


def as_nobody() -> dict[str, Any]:
    """`subprocess.Popen` arguments that run the child as nobody, with no extra groups."""
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def unreadable_by_nobody(paths: Sequence[Path]) -> list[str]:
    """The paths (files or folders) that nobody cannot read."""
    script = (
        'for p; do if [ -d "$p" ]; then ls "$p"; else cat "$p"; fi >/dev/null 2>&1 || echo "$p"; '
        "done"
    )
    done = subprocess.run(
        ["sh", "-c", script, "sh", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        **as_nobody(),
    )
    return done.stdout.split()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user may enter (pytest's own tmp_path lies under a 0700 folder), with
    the umask a login shell has (022)."""
    folder = Path(tempfile.mkdtemp(prefix="nexus-shared-"))
    folder.chmod(0o755)
    old = os.umask(0o022)
    try:
        yield folder
    finally:
        os.umask(old)
        shutil.rmtree(folder, ignore_errors=True)
