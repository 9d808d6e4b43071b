"""What one scan of an inbox found: the shape every domain's inbox scanner returns (no dagster here)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass
class InboxScan:
    """What one scan of an inbox found, compared with the previous scan's ``state``.

    ``keys``: every partition key the inbox holds now; ``requests``: (partition key, digest of its files)
    for each partition with new, changed or removed files, the partitions to (re)run; ``state``: the new
    state to keep (JSON-serialisable; hashes of paths with size and mtime, never the paths themselves);
    ``warnings`` / ``errors``: messages to log (inbox-relative paths and scene names only); ``digests``:
    the digest of every current partition's files (what a run key ``<key>:<digest>`` is made of)."""

    keys: list[str]
    requests: list[tuple[str, str]]
    state: dict
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)


def owner_digest(state: dict[str, list[str]], owner: str) -> str:
    """Digest of the files a partition owns in a scan state (path hash -> (signature, owner))."""
    items = sorted((tok, sig) for tok, (sig, file_owner) in state.items() if file_owner == owner)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]
