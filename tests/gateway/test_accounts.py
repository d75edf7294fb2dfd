from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import accounts
from gateway.accounts import EmailTaken, UserNotFound
from gateway.db.models import CreditTransaction, User
from gateway.fields import FieldError
from gateway.registry import Registry
from tests.support.control_plane import cheap_passwords

USD = 10**12


async def _create(sessions: async_sessionmaker[AsyncSession], registry: Registry, email: str = "Alice@Example.com",
                  password: str = "correct-horse") -> accounts.Member:
    async with sessions() as session:
        member = await accounts.create_user(session, registry, cheap_passwords(), email=email, password=password,
                                            name=" Alice ")
        await session.commit()
    return member


async def test_create_user_opens_a_free_account_with_its_credits(sessions: async_sessionmaker[AsyncSession],
                                                                 registry: Registry) -> None:
    member = await _create(sessions, registry)
    assert (member.user.email, member.user.name, member.user.role, member.user.status) == (
        "alice@example.com", "Alice", "user", "active")
    assert member.user.password_hash.startswith("$argon2id$")
    assert member.account.plan_name == "free" and member.account.balance_pico == USD
    async with sessions() as session:
        entries = (await session.execute(sa.select(CreditTransaction))).scalars().all()
    assert [(e.kind, e.amount_pico, e.balance_after_pico) for e in entries] == [("grant", USD, USD)]


async def test_email_is_unique_whatever_its_case(sessions: async_sessionmaker[AsyncSession],
                                                 registry: Registry) -> None:
    await _create(sessions, registry)
    with pytest.raises(EmailTaken) as caught:
        await _create(sessions, registry, email="  ALICE@example.COM")
    assert (caught.value.status, caught.value.code, caught.value.param) == (409, "email_taken", "email")


@pytest.mark.parametrize("email", [None, "", "alice", "alice@", "@example.com", "alice@example", "a b@example.com",
                                   "alice@@example.com", "x" * 65 + "@example.com", "a@" + "b" * 320 + ".com", 42])
def test_bad_emails(email: object) -> None:
    with pytest.raises(FieldError) as caught:
        accounts.normalize_email(email)
    assert caught.value.param == "email"


@pytest.mark.parametrize("password", [None, "", "seven77", "x" * 1025, 12345678])
def test_bad_passwords(password: object) -> None:
    with pytest.raises(FieldError) as caught:
        accounts.check_password(password)
    assert caught.value.param == "password"


def test_names() -> None:
    assert accounts.check_name(None) == ""
    assert accounts.check_name(" Bob ") == "Bob"
    for bad in ["x" * 201, 5]:
        with pytest.raises(FieldError):
            accounts.check_name(bad)


async def test_authenticate(sessions: async_sessionmaker[AsyncSession], registry: Registry) -> None:
    member = await _create(sessions, registry)
    passwords = cheap_passwords()
    async with sessions() as session:
        user = await accounts.authenticate(session, passwords, email="ALICE@example.com", password="correct-horse")
        assert user is not None and user.id == member.user.id
        assert not await accounts.authenticate(session, passwords, email="alice@example.com", password="wrong-horse")
        assert await accounts.authenticate(session, passwords, email="nobody@example.com", password="x" * 9) is None
        assert await accounts.authenticate(session, passwords, email="not an email", password="x" * 9) is None


async def test_authenticate_upgrades_an_outdated_hash(sessions: async_sessionmaker[AsyncSession],
                                                      registry: Registry) -> None:
    member = await _create(sessions, registry)
    stronger = type(cheap_passwords())(time_cost=2, memory_cost=2048, parallelism=1)
    async with sessions() as session:
        assert await accounts.authenticate(session, stronger, email="alice@example.com", password="correct-horse")
        await session.commit()
    async with sessions() as session:
        user = await session.get(User, member.user.id)
    assert user is not None and "m=2048,t=2,p=1" in user.password_hash
    assert not stronger.needs_rehash(user.password_hash)


async def test_create_admin_creates_then_promotes(sessions: async_sessionmaker[AsyncSession],
                                                  registry: Registry) -> None:
    admin_id = await accounts.create_admin(sessions, registry, email="Root@Example.com", password="long-enough",
                                           passwords=cheap_passwords())
    async with sessions() as session:
        admin = await session.get(User, admin_id)
    assert admin is not None and (admin.email, admin.role) == ("root@example.com", "admin")

    member = await _create(sessions, registry)
    async with sessions() as session:
        await accounts.set_status(session, user_id=member.user.id, status="disabled")
        await session.commit()
    promoted = await accounts.create_admin(sessions, registry, email="alice@example.com", password="ignored-here",
                                           passwords=cheap_passwords())
    assert promoted == member.user.id
    async with sessions() as session:
        user = await session.get(User, promoted)
        assert user is not None and (user.role, user.status) == ("admin", "active")
        assert await accounts.authenticate(session, cheap_passwords(), email="alice@example.com",
                                           password="correct-horse")  # the existing password is kept


@pytest.mark.parametrize(("email", "password", "message"), [("nope", "long-enough", "email"),
                                                             ("root@example.com", "short", "password")])
async def test_create_admin_refuses_bad_input_before_touching_the_database(registry: Registry, email: str,
                                                                           password: str, message: str) -> None:
    def no_database() -> AsyncSession:
        raise AssertionError("validation must come first")

    with pytest.raises(ValueError, match=message):
        await accounts.create_admin(no_database, registry, email=email, password=password,  # type: ignore[arg-type]
                                    passwords=cheap_passwords())


async def test_set_plan(sessions: async_sessionmaker[AsyncSession], registry: Registry) -> None:
    member = await _create(sessions, registry)
    async with sessions() as session:
        changed = await accounts.set_plan(session, registry, user_id=member.user.id, plan="pro")
        assert changed.account.plan_name == "pro" and changed.account.balance_pico == USD
        granted = await accounts.set_plan(session, registry, user_id=member.user.id, plan="starter",
                                          grant_included_credits=True)
        assert granted.account.balance_pico == USD + 12 * USD
        with pytest.raises(FieldError) as caught:
            await accounts.set_plan(session, registry, user_id=member.user.id, plan="platinum")
        assert caught.value.param == "plan"
        with pytest.raises(UserNotFound):
            await accounts.set_plan(session, registry, user_id="missing", plan="pro")


async def test_set_status(sessions: async_sessionmaker[AsyncSession], registry: Registry) -> None:
    member = await _create(sessions, registry)
    async with sessions() as session:
        assert (await accounts.set_status(session, user_id=member.user.id, status="disabled")).user.status == "disabled"
        assert (await accounts.set_status(session, user_id=member.user.id, status="active")).user.status == "active"
        with pytest.raises(ValueError):
            await accounts.set_status(session, user_id=member.user.id, status="deleted")
        with pytest.raises(UserNotFound):
            await accounts.set_status(session, user_id="missing", status="active")
