"""Signing in through the provider's portal (RULES-v2 §1): the member or admin a portal token stands
for, made just in time from (issuer, `sub`), and the fresh sign-in that confirms a download.

The token itself is checked by core.oidc (signature, issuer, audience, times). Here its claims
become a user: the first sign-in of an identity makes a user with no local password; every later
one finds the same user (so `memberId` never changes) and refreshes what the portal owns: the phone
number, the real-name fields, and whether the role claim makes the user an admin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import ExternalIdentity, Role, User
from services import audit
from services.runtime import Caller, Runtime, Viewer

# how fresh the portal's sign-in must be for it to stand in for a password (RULES-v2 §1)
STEP_UP_SECONDS = 300
PHONE_MAX_LENGTH = 32
# the portal makes these writes, not a signed-in admin: audited with no actor
PORTAL = Caller()


@dataclass(frozen=True)
class PortalClaims:
    """What tihuo takes from a verified portal token."""

    issuer: str
    subject: str
    role: Role
    phone: str | None
    realname: dict[str, Any] | None
    auth_time: datetime | None
    expires_at: datetime


def read_claims(rt: Runtime, claims: dict[str, Any]) -> PortalClaims | None:
    """The verified claims as tihuo's terms; None when `sub` is unusable (not a short string)."""
    config = rt.settings
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        return None
    roles = claims.get(config.oidc_role_claim)
    if isinstance(roles, str):
        roles = roles.split()
    is_admin = isinstance(roles, list) and config.oidc_admin_role in roles
    phone = claims.get(config.oidc_phone_claim)
    if not isinstance(phone, str) or not 0 < len(phone) <= PHONE_MAX_LENGTH:
        phone = None
    realname = {name: claims[name] for name in config.oidc_realname_claim_names if name in claims}
    return PortalClaims(
        issuer=str(claims["iss"]),
        subject=subject,
        role=Role.ADMIN if is_admin else Role.MEMBER,
        phone=phone,
        realname=realname or None,
        auth_time=_moment(claims.get("auth_time")),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def _moment(value: object) -> datetime | None:
    """A NumericDate claim as a time; None when it is none (a boolean, a string, out of range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def portal_username(issuer: str, subject: str) -> str:
    """A user name for a portal identity: derived, so it is the same in every process, and free of
    whatever the portal's `sub` holds (an e-mail, a number, a UUID)."""
    digest = hashlib.sha256(f"{issuer}\0{subject}".encode()).hexdigest()
    return f"portal-{digest[:20]}"


async def viewer_for_portal_token(rt: Runtime, token: str) -> Viewer | None:
    """The user a portal token signs in, made at its first sign-in; None when portal sign-in is off,
    the token is not the portal's, or its user is disabled.

    A good answer is remembered like a local token's (`token_cache_seconds`, never past the token's
    `exp`); each token checked anew counts as a sign-in and refreshes the user."""
    tokens = rt.portal_tokens
    if tokens is None:
        return None
    now = rt.now()
    cached = rt.viewer_cache.get(token)
    if cached is not None and cached[1] > now:
        return cached[0]
    verified = await tokens.verify(token)
    claims = None if verified is None else read_claims(rt, verified)
    if claims is None:
        return None
    generation = rt.viewer_cache.generation
    user = await _signed_in_user(rt, claims)
    if user is None or user.disabled_at is not None:
        return None
    viewer = Viewer(id=user.id, username=user.username, role=user.role, auth_time=claims.auth_time)
    ttl = rt.settings.token_cache_seconds
    if ttl > 0 and rt.viewer_cache.generation == generation:
        rt.viewer_cache.put(token, (viewer, min(now + timedelta(seconds=ttl), claims.expires_at)))
    return viewer


async def _signed_in_user(rt: Runtime, claims: PortalClaims) -> User | None:
    """The identity's user, made or refreshed; one read when nothing changed since the last sign-in."""
    user = await _identity_user(rt, claims)
    if user is not None and _unchanged(user, claims):
        return user
    try:
        return await _write_user(rt, claims)
    except IntegrityError:
        # a concurrent first sign-in of the same identity made the user: this one finds it
        return await _identity_user(rt, claims)


def _unchanged(user: User, claims: PortalClaims) -> bool:
    return user.role is claims.role and user.phone == claims.phone and user.realname_claims == claims.realname


async def _identity_user(rt: Runtime, claims: PortalClaims) -> User | None:
    key = (claims.issuer, claims.subject)
    user_id = rt.portal_identities.get(key)
    async with rt.db.read() as session:
        if user_id is not None:
            user = await session.get(User, user_id)
            if user is not None:
                return user
            rt.portal_identities.pop(key, None)  # the rows were removed by hand: look again
        user = await session.scalar(
            select(User)
            .join(ExternalIdentity, ExternalIdentity.user_id == User.id)
            .where(ExternalIdentity.issuer == claims.issuer, ExternalIdentity.subject == claims.subject)
        )
    if user is not None:
        rt.portal_identities[key] = user.id
    return user


async def _write_user(rt: Runtime, claims: PortalClaims) -> User:
    async with rt.db.write() as session:
        user_id = await session.scalar(
            select(ExternalIdentity.user_id).where(
                ExternalIdentity.issuer == claims.issuer, ExternalIdentity.subject == claims.subject
            )
        )
        if user_id is None:
            # no local password: "" is no argon2 hash, so no password ever matches it
            user = User(
                username=portal_username(claims.issuer, claims.subject),
                password_hash="",
                role=claims.role,
                phone=claims.phone,
                realname_claims=claims.realname,
                created_at=rt.now(),
            )
            session.add(user)
            await session.flush()
            session.add(
                ExternalIdentity(
                    issuer=claims.issuer, subject=claims.subject, user_id=user.id, created_at=rt.now()
                )
            )
            await session.flush()
            if claims.role is Role.ADMIN:
                await audit.record(session, rt, PORTAL, audit.PortalRoleSet(user.id, None, Role.ADMIN))
            return user
        user = await session.get(User, user_id, with_for_update=True)
        assert user is not None  # the identity's foreign key keeps its user
        role_changed = user.role is not claims.role
        if role_changed:
            await audit.record(session, rt, PORTAL, audit.PortalRoleSet(user.id, user.role, claims.role))
            user.role = claims.role
        user.phone = claims.phone
        user.realname_claims = claims.realname
    if role_changed:
        # the user's other tokens must not act with the old role from the cache
        rt.viewer_cache.forget_user(user.id)
    return user


def fresh_sign_in(rt: Runtime, viewer: Viewer) -> bool:
    """Whether the viewer signed in at the portal within the last 5 minutes (a download's step-up)."""
    if viewer.auth_time is None:
        return False
    age = rt.now() - viewer.auth_time
    return timedelta(seconds=-60) <= age <= timedelta(seconds=STEP_UP_SECONDS)
