"""Content-addressed artifact storage."""

from maas.storage.base import ArtifactStore, CorruptArtifact, open_store

__all__ = ["ArtifactStore", "CorruptArtifact", "open_store"]
