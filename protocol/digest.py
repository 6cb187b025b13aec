"""The state digest served by ``GET /rooms/{room}/head``.

Lowercase hex SHA-256 of the state's RFC 8785 (JCS) serialization in UTF-8.
JCS fixes key order, number formatting and string escaping, so a client in any
language can serialize its own copy the same way and compare digests.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(state: Any) -> bytes:
    """The RFC 8785 serialization of a state-compatible value."""
    return rfc8785.dumps(state)


def state_digest(state: Any) -> str:
    return hashlib.sha256(canonical_json(state)).hexdigest()
