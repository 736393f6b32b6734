"""Storage backends behind one interface; each is built from explicit values, knowing no registry.

Choosing and building a backend from `.nexusrc` happens on the registry side
(`control_plane.registry.backends`); the cloud SDKs are imported only there, when used.
"""

from control_plane.storage.base import ObjectInfo, StorageBackend, check_key
from control_plane.storage.local import LocalBackend

__all__ = ["LocalBackend", "ObjectInfo", "StorageBackend", "check_key"]
