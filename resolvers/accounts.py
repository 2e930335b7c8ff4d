"""Signing in, the viewer, and changing one's own password."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from schema.accounts import ChangePasswordInput, ChangePasswordSuccess, LoginInput, LoginSuccess, ViewerType
from services import accounts


def me(info: Info) -> ViewerType | None:
    viewer = info.context.caller.viewer
    return ViewerType.of(viewer) if viewer else None


async def login(
    info: Info, input: Annotated[LoginInput, strawberry.argument(description="Username and password.")]
) -> LoginSuccess:
    ctx = info.context
    signed_in = await accounts.login(ctx.rt, ctx.caller, username=input.username, password=input.password)
    return LoginSuccess(
        token=signed_in.token, expires_at=signed_in.expires_at, viewer=ViewerType.of(signed_in.viewer)
    )


async def change_password(
    info: Info,
    input: Annotated[
        ChangePasswordInput, strawberry.argument(description="The current and the new password.")
    ],
) -> ChangePasswordSuccess:
    ctx = info.context
    signed_in = await accounts.change_password(
        ctx.rt, ctx.caller, old_password=input.old_password, new_password=input.new_password
    )
    return ChangePasswordSuccess(
        token=signed_in.token, expires_at=signed_in.expires_at, viewer=ViewerType.of(signed_in.viewer)
    )
