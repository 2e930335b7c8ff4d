"""Accounts in the schema: the viewer, signing in and changing one's own password."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from schema.common import RoleEnum
from schema.errors import InvalidInputErrorType, RateLimitedErrorType, WrongPasswordErrorType
from services.runtime import Viewer


@strawberry.type(name="Viewer", description="The signed-in user.")
class ViewerType:
    id: strawberry.ID = strawberry.field(
        description="The user's id (a member's id appears as memberId elsewhere)."
    )
    username: str = strawberry.field(description="The name used to sign in.")
    role: RoleEnum = strawberry.field(description="What the user may do.")

    @classmethod
    def of(cls, viewer: Viewer) -> ViewerType:
        return cls(id=strawberry.ID(str(viewer.id)), username=viewer.username, role=viewer.role)


@strawberry.input(name="LoginInput", description="Credentials to sign in with.")
class LoginInput:
    username: str = strawberry.field(description="The user's name.")
    password: str = strawberry.field(description="The user's password.")


@strawberry.type(
    name="LoginSuccess", description="Signed in: send the token as `Authorization: Bearer <token>`."
)
class LoginSuccess:
    token: str = strawberry.field(description="A signed bearer token.")
    expires_at: datetime = strawberry.field(description="When the token stops working.")
    viewer: ViewerType = strawberry.field(description="Who signed in.")


LoginResult = Annotated[
    LoginSuccess | WrongPasswordErrorType | RateLimitedErrorType,
    strawberry.union("LoginResult", description="The token, or why signing in was refused."),
]


@strawberry.input(name="ChangePasswordInput", description="The signed-in user's current and new password.")
class ChangePasswordInput:
    old_password: str = strawberry.field(description="The current password, checked like a login.")
    new_password: str = strawberry.field(
        description="The new password: 8 to 1024 characters, different from the current one."
    )


@strawberry.type(
    name="ChangePasswordSuccess",
    description="The password was changed. Every token issued before, this request's included, no "
    "longer works: use the new one.",
)
class ChangePasswordSuccess:
    token: str = strawberry.field(description="A new signed bearer token.")
    expires_at: datetime = strawberry.field(description="When the new token stops working.")
    viewer: ViewerType = strawberry.field(description="Whose password was changed.")


ChangePasswordResult = Annotated[
    ChangePasswordSuccess | WrongPasswordErrorType | RateLimitedErrorType | InvalidInputErrorType,
    strawberry.union(
        "ChangePasswordResult",
        description="A new token, or why the password was not changed (then nothing was).",
    ),
]
