"""The `nexus` command line: thin commands over `control_plane.Registry`."""

from control_plane.cli import deployment as _deployment  # noqa: F401  # `nexus deployment`
from control_plane.cli import events as _events  # noqa: F401  # `nexus events`
from control_plane.cli import keys as _keys  # noqa: F401  # `nexus keys`
from control_plane.cli import lifecycle as _lifecycle  # noqa: F401  # registers its commands
from control_plane.cli import serve as _serve  # noqa: F401  # registers `nexus serve`
from control_plane.cli import team as _team  # noqa: F401  # init, resolve, alias, delete, gc
from control_plane.cli import trust as _trust  # noqa: F401  # sign, keygen
from control_plane.cli import ui as _ui  # noqa: F401  # `nexus ui`
from control_plane.cli.app import app, main

__all__ = ["app", "main"]
