"""Safe, versioned binary codec for reference profiles and monitor snapshots (never pickle)."""

from .codec import FORMAT_VERSION, PartSet, SnapshotError, content_id, decode_state, encode_state, malformed_state

__all__ = ["FORMAT_VERSION", "PartSet", "SnapshotError", "content_id", "decode_state", "encode_state",
           "malformed_state"]
