"""Accounts: creating users, setting passwords, disabling and enabling users, signing in (rate
limited), reading the signed-in viewer, and re-checking a user's own password.

A token carries its user's id and `token_version`; changing a password and disabling a user bump
the version, so every token issued before dies with it (RULES-v2 §7)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.security import TOKEN_PREFIX, TokenClaims, issue_token, read_token, verify_password
from core.sql import Sql
from models import Role, User
from services import audit, portal, ratelimit
from services.errors import FieldProblem, InvalidInput, NotFound, Unauthenticated, WrongPassword
from services.runtime import Caller, Runtime, Viewer

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
# the command line: the operator at the machine, audited with no actor
OPERATOR = Caller()


# what a token's check reads of its user, through the drivers' own path (core.sql): every signed-in
# request past the cache, and every live stream's recheck, makes this read
_USERS = User.__table__
TOKEN_USER = Sql(
    select(_USERS.c.id, _USERS.c.username, _USERS.c.role, _USERS.c.token_version, _USERS.c.disabled_at).where(
        _USERS.c.id == bindparam("user_id")
    )
)


@dataclass(frozen=True)
class SignedIn:
    token: str
    expires_at: datetime
    viewer: Viewer


def _viewer(user: User) -> Viewer:
    return Viewer(id=user.id, username=user.username, role=user.role)


def _password_problems(password: str, field: str) -> list[FieldProblem]:
    if MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        return []
    return [
        FieldProblem(field, "field.out_of_range", {"min": MIN_PASSWORD_LENGTH, "max": MAX_PASSWORD_LENGTH})
    ]


async def create_user(
    rt: Runtime, *, username: str, password: str, role: Role, phone: str | None = None
) -> Viewer:
    """Create a user (the command line's `tihuo users create`); the password is kept as an argon2id hash."""
    problems = []
    if not USERNAME_PATTERN.match(username):
        problems.append(
            FieldProblem("username", "field.bad_format", {"expected": "3-64 letters, digits, _ . @ -"})
        )
    problems += _password_problems(password, "password")
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
    """`login` with a local account; with TIHUO_LOCAL_LOGIN=false every attempt is refused the same
    way, before any look-up (members sign in through the portal then)."""
    if not rt.settings.local_login:
        raise WrongPassword(key="WRONG_PASSWORD.local_login_off")
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
        # a disabled user is answered exactly like a wrong password: same check, same time, same count
        ok = ok and user.disabled_at is None
    async with rt.db.write() as session:
        if not ok:
            await ratelimit.record_failure(session, rt, ratelimit.LOGIN, keys)
        else:
            await ratelimit.clear(session, rt, ratelimit.LOGIN, keys)
    if not ok or user is None:
        raise WrongPassword()
    return _signed_in(rt, user)


def _signed_in(rt: Runtime, user: User) -> SignedIn:
    expires_at = rt.now() + timedelta(seconds=rt.settings.token_ttl_seconds)
    token = issue_token(rt.keys.token, TokenClaims(user.id, user.token_version, expires_at))
    return SignedIn(token=token, expires_at=expires_at.replace(microsecond=0), viewer=_viewer(user))


async def viewer_for_token(rt: Runtime, token: str) -> Viewer | None:
    """The user a bearer token signs in, or None if it is forged, expired or revoked (its user
    deleted or disabled, or its password changed since, or local accounts turned off). A token that
    is not one of ours is tried as the portal's (services.portal), when portal sign-in is on.

    A good answer is remembered for `token_cache_seconds` (default 5), which spares every signed-in
    request a database read. A change made through this process forgets the user's entries at
    once; one made by another process (the command line) is seen at most that much later."""
    if not token.startswith(TOKEN_PREFIX + "."):
        return await portal.viewer_for_portal_token(rt, token)
    if not rt.settings.local_login:
        # local accounts are off: the tokens they were given before sign nobody in either
        return None
    now = rt.now()
    claims = read_token(rt.keys.token, token, now)
    if claims is None:
        return None
    cached = rt.viewer_cache.get(token)
    if cached is not None and cached[1] > now:
        return cached[0]
    generation = rt.viewer_cache.generation

    rows = await rt.db.fetch(TOKEN_USER, {"user_id": claims.user_id})
    user = rows[0] if rows else None
    if user is None or user["token_version"] != claims.token_version or user["disabled_at"] is not None:
        rt.viewer_cache.pop(token, None)
        return None
    viewer = Viewer(id=user["id"], username=user["username"], role=Role(user["role"]))
    ttl = rt.settings.token_cache_seconds
    # not when a user was forgotten meanwhile: this read may predate that change
    if ttl > 0 and rt.viewer_cache.generation == generation:
        rt.viewer_cache.put(token, (viewer, min(now + timedelta(seconds=ttl), claims.expires_at)))
    return viewer


async def confirm_own_password(rt: Runtime, caller: Caller, password: str) -> None:
    """Re-check the signed-in user's password (before a download); rate limited like login.

    An admin signed in through the portal with no local password passes "" instead: the portal's
    sign-in must then be under 5 minutes old (its `auth_time`; RULES-v2 §1's step-up)."""
    viewer = caller.require_signed_in()
    keys = ratelimit.subjects(user=viewer.username.lower(), ip=caller.client_address)
    async with rt.db.read() as session:
        await ratelimit.ensure_allowed(session, rt, ratelimit.DOWNLOAD_PASSWORD, keys)
        password_hash = await session.scalar(select(User.password_hash).where(User.id == viewer.id))
    step_up = password == "" and password_hash == "" and viewer.auth_time is not None
    if step_up:
        ok = portal.fresh_sign_in(rt, viewer)
    else:
        ok = password_hash is not None and await asyncio.to_thread(
            verify_password, rt.hasher, password_hash, password
        )
    async with rt.db.write() as session:
        if ok:
            await ratelimit.clear(session, rt, ratelimit.DOWNLOAD_PASSWORD, keys)
            return
        await ratelimit.record_failure(session, rt, ratelimit.DOWNLOAD_PASSWORD, keys)
    raise WrongPassword(key="WRONG_PASSWORD.step_up" if step_up else "WRONG_PASSWORD.download")


async def _locked_user(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username).with_for_update())
    if user is None:
        raise NotFound()
    return user


async def set_password(rt: Runtime, *, username: str, password: str) -> Viewer:
    """The command line's `tihuo users passwd`: a new password; every token issued before dies.

    InvalidInput for a password outside 8..1024 characters, NotFound for an unknown username."""
    problems = _password_problems(password, "password")
    if problems:
        raise InvalidInput(problems)
    password_hash = await asyncio.to_thread(rt.hasher.hash, password)
    async with rt.db.write() as session:
        user = await _locked_user(session, username)
        old_version = user.token_version
        user.password_hash = password_hash
        user.token_version = old_version + 1
        await audit.record(session, rt, OPERATOR, audit.PasswordSet(user.id, old_version, user.token_version))
    rt.viewer_cache.forget_user(user.id)
    return _viewer(user)


async def disable_user(rt: Runtime, *, username: str) -> bool:
    """The command line's `tihuo users disable`: the user can no longer sign in and every token
    issued before dies (enabling again does not bring them back). False if already disabled."""
    async with rt.db.write() as session:
        user = await _locked_user(session, username)
        if user.disabled_at is not None:
            return False
        old_version = user.token_version
        user.disabled_at = rt.now()
        user.token_version = old_version + 1
        await audit.record(
            session, rt, OPERATOR, audit.UserDisabled(user.id, old_version, user.token_version)
        )
    rt.viewer_cache.forget_user(user.id)
    return True


async def enable_user(rt: Runtime, *, username: str) -> bool:
    """The command line's `tihuo users enable`: the user may sign in again (with a new token; the
    ones from before the disabling stay dead). False if the user was not disabled."""
    async with rt.db.write() as session:
        user = await _locked_user(session, username)
        if user.disabled_at is None:
            return False
        user.disabled_at = None
        await audit.record(session, rt, OPERATOR, audit.UserEnabled(user.id))
    return True


async def change_password(rt: Runtime, caller: Caller, *, old_password: str, new_password: str) -> SignedIn:
    """`changePassword`: the signed-in user's own password, checked like a login (rate limited per
    user and per address). Every token issued before dies, the one of this request included, so a
    fresh one is returned."""
    viewer = caller.require_signed_in()
    problems = _password_problems(new_password, "newPassword")
    if not problems and new_password == old_password:
        problems.append(FieldProblem("newPassword", "field.same_as_old"))
    if problems:
        raise InvalidInput(problems)
    keys = ratelimit.subjects(user=viewer.username.lower(), ip=caller.client_address)
    async with rt.db.read() as session:
        await ratelimit.ensure_allowed(session, rt, ratelimit.CHANGE_PASSWORD, keys)
        user = await session.get(User, viewer.id)
    if user is None or user.disabled_at is not None:
        # deleted or disabled within the short viewer cache: the token is dead already
        raise Unauthenticated()
    ok = await asyncio.to_thread(verify_password, rt.hasher, user.password_hash, old_password)
    if not ok:
        async with rt.db.write() as session:
            await ratelimit.record_failure(session, rt, ratelimit.CHANGE_PASSWORD, keys)
        raise WrongPassword(key="WRONG_PASSWORD.old_password")
    new_hash = await asyncio.to_thread(rt.hasher.hash, new_password)
    async with rt.db.write() as session:
        await ratelimit.clear(session, rt, ratelimit.CHANGE_PASSWORD, keys)
        locked = await session.get(User, viewer.id, with_for_update=True)
        if locked is None or locked.disabled_at is not None or locked.password_hash != user.password_hash:
            # disabled or given another password since the check: this request's token died with it
            raise Unauthenticated()
        old_version = locked.token_version
        locked.password_hash = new_hash
        locked.token_version = old_version + 1
        await audit.record(
            session, rt, caller, audit.PasswordChanged(locked.id, old_version, locked.token_version)
        )
    rt.viewer_cache.forget_user(locked.id)
    return _signed_in(rt, locked)
