"""Settings for every part: one pydantic-settings mechanism over `.nexusrc`, NEXUS_* and flags.

pydantic-settings costs ~0.14 s to import, more than `nexus list` itself on a warm index,
so its names load on first use and the zero-config read path never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control_plane.core.lazy import lazy_names

CONFIG_FILENAME = ".nexusrc"

if TYPE_CHECKING:
    from control_plane.settings.nexusrc import NexusConfig, load_config
    from control_plane.settings.sources import load_settings
    from nexus_common.settings import describe

_LAZY = {
    "NexusConfig": "control_plane.settings.nexusrc",
    "load_config": "control_plane.settings.nexusrc",
    "describe": "nexus_common.settings",
    "load_settings": "control_plane.settings.sources",
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "CONFIG_FILENAME",
    "NexusConfig",
    "describe",
    "load_config",
    "load_settings",
]
