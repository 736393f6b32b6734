"""Run `nexus` and stop it (SIGSTOP) at a named point, for a test to `kill -9` it there.

    python -m tests.reliability.stop_at POINT nexus-args...

POINT:
  upload    after the first 1 MiB of the object is in the local store's temp file
  metadata  with the new `.nexus_meta.json` written to its temp file, before the rename
  index     after the rename, before the listing index and the event are written

The process stops itself, so the test finds it at exactly that point every run (a
timed kill would land anywhere, or nowhere, depending on the machine's speed).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def _patch(point: str) -> None:
    from control_plane.metadata import file as metadata_file
    from control_plane.storage import local

    if point == "upload":
        copy = local._copy

        def partial_then_stop(src_fd: int, dst_fd: int, progress: Any) -> None:
            os.sendfile(dst_fd, src_fd, None, 1 << 20)
            _stop()
            copy(src_fd, dst_fd, progress)

        local._copy = partial_then_stop
    elif point == "metadata":
        replace = os.replace

        def stop_before_rename(src: Any, dst: Any, **kwargs: Any) -> None:
            if Path(dst).name == ".nexus_meta.json":
                _stop()
            replace(src, dst, **kwargs)

        os.replace = stop_before_rename  # every rename in this process; only that one stops
    elif point == "index":
        write = metadata_file.atomic_write

        def stop_after_rename(
            path: Path, data: bytes, *, durable: bool = True, mode: int = 0o666
        ) -> None:
            write(path, data, durable=durable, mode=mode)
            if path.name == ".nexus_meta.json":
                _stop()

        metadata_file.atomic_write = stop_after_rename
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    _patch(sys.argv[1])
    sys.argv = ["nexus", *sys.argv[2:]]
    from control_plane.cli import main

    main()
