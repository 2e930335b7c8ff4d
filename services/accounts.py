"""Accounts: creating users, signing in (rate limited), reading the signed-in viewer, and
re-checking an admin's own password before a sensitive action."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import Role, User
from services import ratelimit
from services.errors import FieldProblem, InvalidInput, WrongPassword
from services.runtime import Caller, Runtime, Viewer
from services.security import TokenClaims, issue_token, read_token, verify_password

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True)
class SignedIn:
    token: str
    expires_at: datetime
    viewer: Viewer


def _viewer(user: User) -> Viewer:
    return Viewer(id=user.id, username=user.username, role=user.role)


async def create_user(
    rt: Runtime, *, username: str, password: str, role: Role, phone: str | None = None
) -> Viewer:
    """Create a user (the command line's `tihuo users create`); the password is kept as an argon2id hash."""
    problems = []
    if not USERNAME_PATTERN.match(username):
        problems.append(
            FieldProblem("username", "field.bad_format", {"expected": "3-64 letters, digits, _ . @ -"})
        )
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        problems.append(
            FieldProblem(
                "password", "field.out_of_range", {"min": MIN_PASSWORD_LENGTH, "max": MAX_PASSWORD_LENGTH}
            )
        )
    if problems:
        raise InvalidInput(problems)
    password_hash = await asyncio.to_thread(rt.hasher.hash, password)
    try:
        async with rt.db.write() as session:
            user = User(
                username=username, password_hash=password_hash, role=role, phone=phone, created_at=rt.now()
            )
            session.add(user)
            await session.flush()
            return _viewer(user)
    except IntegrityError:
        raise InvalidInput([FieldProblem("username", "field.taken")]) from None


async def login(rt: Runtime, caller: Caller, *, username: str, password: str) -> SignedIn:
    keys = ratelimit.subjects(user=username.lower(), ip=caller.client_address)
    async with rt.db.read() as session:
        await ratelimit.ensure_allowed(session, rt, ratelimit.LOGIN, keys)
        user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        # spend the same time as a real check, so a wrong username is not told apart by timing
        await asyncio.to_thread(verify_password, rt.hasher, rt.dummy_password_hash, password)
        ok = False
    else:
        ok = await asyncio.to_thread(verify_password, rt.hasher, user.password_hash, password)
    async with rt.db.write() as session:
        if not ok:
            await ratelimit.record_failure(session, rt, ratelimit.LOGIN, keys)
        else:
            await ratelimit.clear(session, rt, ratelimit.LOGIN, keys)
    if not ok or user is None:
        raise WrongPassword()
    expires_at = rt.now() + timedelta(seconds=rt.settings.token_ttl_seconds)
    token = issue_token(rt.keys.token, TokenClaims(user.id, user.token_version, expires_at))
    return SignedIn(token=token, expires_at=expires_at.replace(microsecond=0), viewer=_viewer(user))


async def viewer_for_token(rt: Runtime, token: str) -> Viewer | None:
    """The user a bearer token signs in, or None if it is forged, expired or revoked.

    A good answer is remembered for `token_cache_seconds` (default 5), which spares every signed-in
    request a database read; a revoked token therefore works at most that much longer."""
    now = rt.now()
    claims = read_token(rt.keys.token, token, now)
    if claims is None:
        return None
    cached = rt.viewer_cache.get(token)
    if cached is not None and cached[1] > now:
        return cached[0]
    async with rt.db.read() as session:
        user = await session.get(User, claims.user_id)
    if user is None or user.token_version != claims.token_version:
        rt.viewer_cache.pop(token, None)
        return None
    viewer = _viewer(user)
    ttl = rt.settings.token_cache_seconds
    if ttl > 0:
        rt.viewer_cache.put(token, (viewer, min(now + timedelta(seconds=ttl), claims.expires_at)))
    return viewer


async def confirm_own_password(rt: Runtime, caller: Caller, password: str) -> None:
    """Re-check the signed-in user's password (before a download); rate limited like login."""
    viewer = caller.require_signed_in()
    keys = ratelimit.subjects(user=viewer.username.lower(), ip=caller.client_address)
    async with rt.db.read() as session:
        await ratelimit.ensure_allowed(session, rt, ratelimit.DOWNLOAD_PASSWORD, keys)
        password_hash = await session.scalar(select(User.password_hash).where(User.id == viewer.id))
    ok = password_hash is not None and await asyncio.to_thread(
        verify_password, rt.hasher, password_hash, password
    )
    async with rt.db.write() as session:
        if ok:
            await ratelimit.clear(session, rt, ratelimit.DOWNLOAD_PASSWORD, keys)
            return
        await ratelimit.record_failure(session, rt, ratelimit.DOWNLOAD_PASSWORD, keys)
    raise WrongPassword(key="WRONG_PASSWORD.download")
