"""SIGNUP_MODE (open, invite, closed) and admin-created users and invites, on each backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import sqlalchemy as sa
from starlette.applications import Starlette

from gateway.db.models import Invite, User
from gateway.settings import Settings
from tests.conftest import envelope
from tests.support.control_plane import PASSWORD, ctx, make_admin
from tests.support.running import running

Factory = Callable[..., AsyncIterator[tuple[Starlette, httpx.AsyncClient]]]


async def _admin_in(app: Starlette, client: httpx.AsyncClient) -> dict[str, str]:
    """An admin made directly in the database (sign-up may be closed)."""
    from gateway import accounts

    async with ctx(app).sessions() as session:
        member = await accounts.create_user(session, ctx(app).registry.current, ctx(app).passwords,
                                            email="root@example.com", password=PASSWORD, role="admin")
        await session.commit()
    login = await client.post("/api/auth/login", json={"email": "root@example.com", "password": PASSWORD})
    client.cookies.clear()
    assert login.status_code == 200, login.text
    assert member.user.role == "admin"
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _signup(email: str, **extra: object) -> dict[str, object]:
    return {"email": email, "password": PASSWORD, **extra}


async def test_open_mode_signs_anyone_up(make_settings: Callable[..., Settings], database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url)) as (_, client):
        response = await client.post("/api/auth/signup", json=_signup("a@example.com"))
        assert response.status_code == 201, response.text


async def test_closed_mode_refuses_signup_but_admin_creates_users(make_settings: Callable[..., Settings],
                                                                  database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url, SIGNUP_MODE="closed")) as (app, client):
        refused = await client.post("/api/auth/signup", json=_signup("a@example.com"))
        assert refused.status_code == 403
        assert envelope(refused)["code"] == "signup_closed"
        admin = await _admin_in(app, client)
        created = await client.post("/api/admin/users", headers=admin,
                                    json={"email": "New@Example.com", "password": PASSWORD, "name": "New"})
        assert created.status_code == 201, created.text
        assert (created.json()["email"], created.json()["plan_name"], created.json()["balance_usd"]) == \
            ("new@example.com", "free", "1.00")
        login = await client.post("/api/auth/login", json={"email": "new@example.com", "password": PASSWORD})
        assert login.status_code == 200
        duplicate = await client.post("/api/admin/users", headers=admin,
                                      json={"email": "new@example.com", "password": PASSWORD})
        assert duplicate.status_code == 409
        bad_role = await client.post("/api/admin/users", headers=admin,
                                     json={"email": "x@example.com", "password": PASSWORD, "role": "root"})
        assert envelope(bad_role)["param"] == "role"


async def test_invite_mode_needs_a_valid_single_use_invite(make_settings: Callable[..., Settings],
                                                          database_url: str) -> None:
    settings = make_settings(DATABASE_URL=database_url, SIGNUP_MODE="invite",
                             PUBLIC_BASE_URL="https://router.example.com")
    async with running(settings) as (app, client):
        for body in (_signup("a@example.com"), _signup("a@example.com", invite="inv_nonsense"),
                     _signup("a@example.com", invite=12)):
            refused = await client.post("/api/auth/signup", json=body)
            assert refused.status_code == 403, refused.text
            assert envelope(refused)["code"] == "invite_required"
        admin = await _admin_in(app, client)
        made = await client.post("/api/admin/invites", headers=admin, json={"days": 3})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        assert made.json()["signup_url"] == f"https://router.example.com/signup?invite={token}"
        ok = await client.post("/api/auth/signup", json=_signup("a@example.com", invite=token))
        assert ok.status_code == 201, ok.text
        client.cookies.clear()
        again = await client.post("/api/auth/signup", json=_signup("b@example.com", invite=token))
        assert again.status_code == 403 and envelope(again)["code"] == "invite_required"
        listed = (await client.get("/api/admin/invites", headers=admin)).json()
        assert listed["total"] == 1 and listed["items"][0]["used_by"] == ok.json()["user"]["id"]
        assert "token" not in listed["items"][0]
        async with ctx(app).sessions() as session:  # only the hash is stored
            stored = (await session.execute(sa.select(Invite.token_hash))).scalar_one()
            assert token not in stored


async def test_invite_bound_to_an_email_and_expiry(make_settings: Callable[..., Settings], database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url, SIGNUP_MODE="invite")) as (app, client):
        admin = await _admin_in(app, client)
        bound = (await client.post("/api/admin/invites", headers=admin, json={"email": "Only@Example.com"})).json()
        wrong = await client.post("/api/auth/signup", json=_signup("other@example.com", invite=bound["token"]))
        assert wrong.status_code == 403
        right = await client.post("/api/auth/signup", json=_signup("only@example.com", invite=bound["token"]))
        assert right.status_code == 201
        client.cookies.clear()
        expiring = (await client.post("/api/admin/invites", headers=admin, json={})).json()
        async with ctx(app).sessions() as session:
            invite = await session.get(Invite, expiring["id"])
            assert invite is not None
            invite.expires_at = invite.created_at - timedelta(seconds=1)
            await session.commit()
        expired = await client.post("/api/auth/signup", json=_signup("late@example.com", invite=expiring["token"]))
        assert expired.status_code == 403 and envelope(expired)["code"] == "invite_required"
        for body, param in (({"days": 0}, "days"), ({"days": "7"}, "days"), ({"email": "nope"}, "email")):
            bad = await client.post("/api/admin/invites", headers=admin, json=body)
            assert bad.status_code == 400 and envelope(bad)["param"] == param


async def test_a_refused_signup_does_not_spend_the_invite(make_settings: Callable[..., Settings],
                                                         database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url, SIGNUP_MODE="invite")) as (app, client):
        admin = await _admin_in(app, client)
        token = (await client.post("/api/admin/invites", headers=admin, json={})).json()["token"]
        taken = await client.post("/api/auth/signup", json=_signup("root@example.com", invite=token))
        assert taken.status_code == 409  # the email exists: nothing is committed
        ok = await client.post("/api/auth/signup", json=_signup("fresh@example.com", invite=token))
        assert ok.status_code == 201


async def test_concurrent_signups_with_one_invite_admit_one(make_settings: Callable[..., Settings],
                                                           database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url, SIGNUP_MODE="invite")) as (app, client):
        admin = await _admin_in(app, client)
        token = (await client.post("/api/admin/invites", headers=admin, json={})).json()["token"]
        answers = await asyncio.gather(*(client.post("/api/auth/signup", json=_signup(f"u{i}@example.com",
                                                                                       invite=token))
                                         for i in range(6)))
        assert sorted(answer.status_code for answer in answers) == [201] + [403] * 5
        async with ctx(app).sessions() as session:
            users = await session.scalar(sa.select(sa.func.count()).select_from(User))
        assert users == 2  # the admin and the one winner


async def test_only_admins_manage_invites_and_users(make_settings: Callable[..., Settings],
                                                   database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url)) as (app, client):
        user = await client.post("/api/auth/signup", json=_signup("u@example.com"))
        client.cookies.clear()
        headers = {"Authorization": f"Bearer {user.json()['access_token']}"}
        for method, path in (("POST", "/api/admin/invites"), ("GET", "/api/admin/invites"),
                             ("POST", "/api/admin/users")):
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 403, (path, response.text)
        admin = await make_admin(app, client)
        assert (await client.get("/api/admin/invites", headers=admin.headers)).status_code == 200
