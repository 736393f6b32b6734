"""`.nexus_meta.json`: its format, its entries, locked atomic writes, the listing index."""

from control_plane.metadata.document import (
    SCHEMA_VERSION,
    MetadataDocument,
    parse_document,
)
from control_plane.metadata.entry import ModelEntry, VersionFacts, parse_timestamp
from control_plane.metadata.file import MetadataFile
from control_plane.metadata.location import METADATA_FILENAME
from nexus_common.files import atomic_write

__all__ = [
    "METADATA_FILENAME",
    "SCHEMA_VERSION",
    "MetadataDocument",
    "MetadataFile",
    "ModelEntry",
    "VersionFacts",
    "atomic_write",
    "parse_document",
    "parse_timestamp",
]
