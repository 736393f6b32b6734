"""The `nexus` console script, and Git's merge driver: each starts with only what it needs.

A plain `nexus list` is answered from its cached text, and the merge driver merges,
before the CLI (typer, rich, the whole registry: ~0.2 s of imports) is loaded;
everything else runs the CLI.
"""

from __future__ import annotations

import gc
import sys


def main() -> None:
    args = sys.argv[1:]
    if args == ["list"]:
        from control_plane.metadata.rendered import replay

        if replay():
            return
    if args[:1] == ["merge-driver"] and len(args) in (4, 5):
        gc.disable()  # a short process building many acyclic objects, as in cli.main
        from control_plane.registry.conflicts import run_driver

        sys.exit(run_driver(*args[1:]))
    from control_plane.cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
