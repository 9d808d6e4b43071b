"""Pseudonymisation: patient identifiers become keyed hashes before they reach any key, path, log or store.

The key comes from the environment variable ``IMAGING_PIPELINES_PSEUDONYM_KEY``. Without it a documented,
public development key is used, which is fine for demos and tests but gives no protection: set a secret
key in production (and keep it: changing it changes every partition key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

PSEUDONYM_KEY_ENV = "IMAGING_PIPELINES_PSEUDONYM_KEY"
DEVELOPMENT_KEY = "imaging-pipelines-development-key"  # documented in docs/privacy.md; not a secret


def pseudonym_key() -> bytes:
    return os.environ.get(PSEUDONYM_KEY_ENV, DEVELOPMENT_KEY).encode()


def using_development_key() -> bool:
    return PSEUDONYM_KEY_ENV not in os.environ


def pseudonymise(identifier: str, namespace: str = "patient") -> str:
    """Stable pseudonym ``p<16 hex>`` for an identifier: HMAC-SHA256 under the configured key.

    ``namespace`` keeps pseudonyms of different kinds of identifier apart (a DICOM PatientID vs a folder name).
    """
    msg = f"{namespace}\x00{identifier.strip()}".encode()
    return "p" + hmac.new(pseudonym_key(), msg, hashlib.sha256).hexdigest()[:16]


_SAFE = re.compile(r"[^A-Za-z0-9]+")


def slug(text: str, max_len: int = 40) -> str:
    """Lower-case ``[a-z0-9_]`` slug of a free-text label (series description, file stem)."""
    s = _SAFE.sub("_", text).strip("_").lower()
    return s[:max_len] or "unnamed"


_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\"|b'[^']*')")


def redact_quoted(message: str, max_len: int = 300) -> str:
    """A third-party error message with quoted values replaced by ``<value>`` (they may echo header
    content such as names or dates) and cut to ``max_len`` characters."""
    text = _QUOTED.sub("<value>", str(message))
    return text if len(text) <= max_len else text[: max_len - 3] + "..."
