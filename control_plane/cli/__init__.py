"""The `nexus` command line: thin commands over `control_plane.Registry`."""

from control_plane.cli.root import app, main

__all__ = ["app", "main"]
