"""API keys: `sk-pr-live-` + 40 base62 characters (~238 bits). Only the prefix and an HMAC are stored.

A key has far more entropy than any password, so a keyed HMAC-SHA256 (the server's
APP_SECRET_KEY) is enough at rest: it is deterministic, so the digest itself is the indexed
lookup key, and a stolen table is useless without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

KEY_PREFIX = "sk-pr-live-"
PREFIX_LENGTH = 15  # what we keep and show: "sk-pr-live-" plus 4 characters
SECRET_LENGTH = 40
_ALPHABET = string.ascii_letters + string.digits
_SHAPE = re.compile(r"^sk-pr-live-[A-Za-z0-9]{32,128}$")


def mint_key() -> str:
    """A new random key; shown to its owner once and never stored."""
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def key_prefix(raw_key: str) -> str:
    return raw_key[:PREFIX_LENGTH]


def is_well_formed(raw_key: str) -> bool:
    return bool(_SHAPE.match(raw_key))


def hash_key(raw_key: str, secret: str) -> str:
    """HMAC-SHA256(secret, key) as 64 hex characters: the only form a key has at rest."""
    return hmac.new(secret.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def matches(stored_hash: str, raw_key: str, secret: str) -> bool:
    """Constant-time check of a key against its stored hash."""
    return hmac.compare_digest(stored_hash.encode(), hash_key(raw_key, secret).encode())
