"""Content-addressed artifact storage."""

from maas.storage.base import ArtifactStore, open_store

__all__ = ["ArtifactStore", "open_store"]
