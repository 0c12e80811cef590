"""Where a result came from: a digest of the segzoo source files, and fingerprints of what decides a result."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent


def source_digest() -> str:
    """SHA-256 over the segzoo source files: code edits make old training state stale."""
    h = hashlib.sha256()
    for path in sorted(SOURCE_ROOT.rglob("*.py")):
        h.update(str(path.relative_to(SOURCE_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def fingerprint(description: dict, *blobs: bytes) -> str:
    """16 hex digits over a JSON-able ``description``, byte ``blobs`` (file contents, tensors) and the source
    digest: if any of it changes, so does the fingerprint."""
    h = hashlib.sha256()
    h.update(json.dumps(description, sort_keys=True).encode())
    for blob in blobs:
        h.update(blob)
    h.update(source_digest().encode())
    return h.hexdigest()[:16]
