from __future__ import annotations

from argon2 import PasswordHasher

from gateway.auth.passwords import Passwords
from tests.support.control_plane import cheap_passwords


async def test_hash_is_argon2id_and_verifies() -> None:
    passwords = cheap_passwords()
    hashed = await passwords.hash("correct-horse")
    assert hashed.startswith("$argon2id$")
    assert "correct-horse" not in hashed
    assert await passwords.verify(hashed, "correct-horse")
    assert not await passwords.verify(hashed, "correct-horsE")


async def test_unknown_user_verify_is_false_and_still_hashes() -> None:
    passwords = cheap_passwords()
    assert not await passwords.verify(None, "anything-at-all")
    assert passwords._dummy is not None and passwords._dummy.startswith("$argon2id$")


async def test_garbage_hash_never_verifies() -> None:
    assert not await cheap_passwords().verify("not-a-hash", "whatever1")


def test_production_costs_are_the_library_defaults() -> None:
    defaults = PasswordHasher()
    hasher = Passwords()._hasher
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (
        defaults.time_cost, defaults.memory_cost, defaults.parallelism)


async def test_hash_made_with_other_costs_needs_rehash() -> None:
    cheap = await cheap_passwords().hash("correct-horse")
    assert Passwords().needs_rehash(cheap)
    assert not cheap_passwords().needs_rehash(cheap)
    assert Passwords().needs_rehash("garbage")
