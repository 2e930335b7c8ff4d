"""What every service call is given: the runtime (database, settings, keys, clock) and the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any

from argon2 import PasswordHasher
from cachetools import LRUCache

from core.db import Database
from core.keys import Keys
from core.oidc import PortalTokens
from core.security import password_hasher
from core.settings import Settings
from models.base import Role
from services.errors import Forbidden, Unauthenticated
from services.login_passwords import PasswordKeys


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ViewerCache(LRUCache[str, Any]):
    """Bearer token -> (viewer, good until), at most `maxsize` of them, the least recently used going
    first (see services.accounts.viewer_for_token).

    `generation` grows whenever a user's entries are forgotten, so a token check that read the user
    before the change does not put a stale entry back after it."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.generation = 0

    def put(self, token: str, entry: Any) -> None:
        self[token] = entry

    def forget_user(self, user_id: int) -> None:
        self.generation += 1
        for token in [token for token, (viewer, _) in self.items() if viewer.id == user_id]:
            self.pop(token, None)


@dataclass(eq=False)
class Runtime:
    db: Database
    settings: Settings
    keys: Keys
    clock: Callable[[], datetime] = _utcnow
    # set after a commit that queued provisioning work, so an in-process worker starts at once
    jobs_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # set after a commit that queued webhooks (a redemption's), so an in-process worker sends at once
    webhooks_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # bearer token -> (viewer, good until): see services.accounts.viewer_for_token
    viewer_cache: ViewerCache = field(default_factory=lambda: ViewerCache(10_000))
    # portal identity (issuer, sub) -> its user's id (services.portal): an identity never moves to
    # another user, so a sign-in reads the user by its key, as a local token's check does
    portal_identities: LRUCache[tuple[str, str], int] = field(default_factory=lambda: LRUCache(10_000))
    # striped per-member locks for card-code attempts (services.redemption)
    attempt_locks: list[asyncio.Lock] = field(default_factory=lambda: [asyncio.Lock() for _ in range(64)])

    def now(self) -> datetime:
        return self.clock()

    @cached_property
    def portal_tokens(self) -> PortalTokens | None:
        """The portal's token verifier and its kept keys (services.portal); None while
        TIHUO_OIDC_ISSUER is unset. Its refetch rule runs on this runtime's clock."""
        config = self.settings
        if not config.oidc_issuer or not config.oidc_audience:
            return None
        return PortalTokens(
            config.oidc_issuer,
            config.oidc_audience,
            jwks_url=config.oidc_jwks_url,
            monotonic=lambda: self.now().timestamp(),
        )

    @cached_property
    def hasher(self) -> PasswordHasher:
        return password_hasher(self.settings.password_time_cost, self.settings.password_memory_kib)

    @cached_property
    def password_keys(self) -> PasswordKeys:
        """The keys of the login passwords waiting for their SMS (services.login_passwords)."""
        return PasswordKeys.from_settings(self.settings)

    @cached_property
    def dummy_password_hash(self) -> str:
        """A hash to verify against when a username is unknown, so timing does not tell."""
        return self.hasher.hash("not the password of anyone")

    def today(self) -> date:
        """Today in the business time zone."""
        return self.now().astimezone(self.settings.zone).date()


@dataclass(frozen=True)
class Viewer:
    id: int
    username: str
    role: Role
    # signed in through the portal: when the portal last checked who they are (the token's
    # `auth_time`), for a download's step-up (services.portal); None for local tokens
    auth_time: datetime | None = None


@dataclass(frozen=True)
class Caller:
    """Who is asking, and from where. `viewer` is None when nobody is signed in."""

    viewer: Viewer | None = None
    client_address: str | None = None
    request_id: str | None = None
    locale: str = field(default="zh-CN")

    def require_signed_in(self) -> Viewer:
        if self.viewer is None:
            raise Unauthenticated()
        return self.viewer

    def require_admin(self) -> Viewer:
        viewer = self.require_signed_in()
        if viewer.role is not Role.ADMIN:
            raise Forbidden()
        return viewer

    def require_member(self) -> Viewer:
        viewer = self.require_signed_in()
        if viewer.role is not Role.MEMBER:
            raise Forbidden()
        return viewer
