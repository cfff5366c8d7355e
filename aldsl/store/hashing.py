"""Content hashes: the one way every cache key, artifact key and seed is derived from data."""

from __future__ import annotations

import hashlib
import json


def content_hash(*parts: object) -> str:
    """A short, stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]
