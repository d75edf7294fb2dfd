from __future__ import annotations

import re

from gateway.auth.apikeys import PREFIX_LENGTH, hash_key, is_well_formed, key_prefix, matches, mint_key

SECRET = "k" * 48


def test_minted_key_shape() -> None:
    key = mint_key()
    assert re.fullmatch(r"sk-pr-live-[A-Za-z0-9]{40}", key)
    assert is_well_formed(key)


def test_keys_are_unique() -> None:
    assert len({mint_key() for _ in range(500)}) == 500


def test_prefix_is_the_first_15_characters() -> None:
    key = mint_key()
    assert key_prefix(key) == key[:15] and PREFIX_LENGTH == 15
    assert key_prefix(key).startswith("sk-pr-live-")


def test_hash_is_keyed_hex_and_deterministic() -> None:
    key = mint_key()
    digest = hash_key(key, SECRET)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_key(key, SECRET) == digest
    assert hash_key(key, "other" * 10) != digest
    assert key not in digest


def test_matches() -> None:
    key = mint_key()
    assert matches(hash_key(key, SECRET), key, SECRET)
    assert not matches(hash_key(key, SECRET), mint_key(), SECRET)


def test_malformed_keys() -> None:
    for bad in ["", "sk-pr-live-", "sk-pr-live-short", "sk-pr-test-" + "a" * 40, "sk-pr-live-" + "a" * 39 + "!",
                " sk-pr-live-" + "a" * 40, "Bearer sk-pr-live-" + "a" * 40]:
        assert not is_well_formed(bad), bad
