"""Settings for every part: one pydantic-settings mechanism over `.nexusrc`, NEXUS_* and flags."""

from control_plane.settings.nexusrc import CONFIG_FILENAME, NexusConfig, load_config
from control_plane.settings.sources import describe, load_settings, settings_env

__all__ = [
    "CONFIG_FILENAME",
    "NexusConfig",
    "describe",
    "load_config",
    "load_settings",
    "settings_env",
]
