"""`python -m control_plane.cli`: the `nexus` command, for the merge driver Git runs."""

from control_plane.cli import main

main()
