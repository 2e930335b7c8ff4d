"""The contract's error types, the handlers that turn domain exceptions into them, and the
extension that shapes top-level errors (UNAUTHENTICATED, FORBIDDEN, INVALID_INPUT, masked bugs).
"""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError

from core.messages import DEFAULT_LOCALE, render
from schema.common import described_enum
from schema.scalars import InvalidScalarValue
from services import errors as domain

log = logging.getLogger("tihuo.graphql")

ErrorCode = described_enum(
    domain.ErrorCode,
    name="ErrorCode",
    description="Stable codes of business errors; clients branch on these, never on messages.",
    values={
        domain.ErrorCode.INVALID_INPUT: "An input value is out of range or inconsistent; see fieldErrors.",
        domain.ErrorCode.NOT_FOUND: "The object named by an id does not exist (or is not yours).",
        domain.ErrorCode.INVALID_CODE: "Not a well-formed card code (length, alphabet or check symbol); not counted as an attempt.",
        domain.ErrorCode.CARD_NOT_FOUND: "A well-formed code that no card has; counted by the failed-attempt limit.",
        domain.ErrorCode.CARD_USED: "The card was redeemed already.",
        domain.ErrorCode.CARD_DISABLED: "The card was disabled by an admin.",
        domain.ErrorCode.CARD_EXPIRED: "The card's batch is past its validity day (business time zone).",
        domain.ErrorCode.BATCH_DISABLED: "The card's batch was disabled by an admin.",
        domain.ErrorCode.CARD_NOT_YET_VALID: "Before the card's batch's validFrom day (business time zone).",
        domain.ErrorCode.MEMBER_LIMIT_REACHED: "The member already holds perMemberLimit live redemptions of this batch.",
        domain.ErrorCode.OS_REQUIRED: "A cloud server or bare-metal card needs an OS image of its line.",
        domain.ErrorCode.OS_NOT_ALLOWED: "The image is not of the card's line, or the product takes none.",
        domain.ErrorCode.OUT_OF_STOCK: "The bare-metal model has no stock left.",
        domain.ErrorCode.RATE_LIMITED: "Too many failed attempts; retryAfterSeconds says when to try again.",
        domain.ErrorCode.WRONG_PASSWORD: "Wrong username or password (sign-in), or wrong own password (a download).",
        domain.ErrorCode.INVALID_STATE: "The object's state does not allow this, e.g. disabling a used card.",
        domain.ErrorCode.IDEMPOTENCY_CONFLICT: "The idempotency key was used before with a different input.",
    },
)


@strawberry.interface(name="Error", description="A business failure, returned as data in a result union.")
class ErrorType:
    code: ErrorCode = strawberry.field(description="What went wrong, as a stable code.")
    message: str = strawberry.field(
        description="What went wrong, for people; zh-CN by default, English with Accept-Language: en."
    )


@strawberry.type(name="FieldError", description="One input field that was rejected.")
class FieldErrorType:
    field: str = strawberry.field(description="The field's path in the input, e.g. `config.diskGb`.")
    message: str = strawberry.field(description="Why it was rejected, for people.")


@strawberry.type(name="InvalidInputError", description="Input values out of range or inconsistent.")
class InvalidInputErrorType(ErrorType):
    field_errors: list[FieldErrorType] = strawberry.field(description="Every rejected field.")


@strawberry.type(
    name="NotFoundError", description="The object named by an id does not exist (or is not yours)."
)
class NotFoundErrorType(ErrorType):
    pass


@strawberry.type(name="CardCodeError", description="INVALID_CODE (malformed code) or CARD_NOT_FOUND.")
class CardCodeErrorType(ErrorType):
    pass


@strawberry.type(
    name="CardUnavailableError",
    description="The card exists but cannot be redeemed: CARD_USED, CARD_DISABLED, CARD_NOT_YET_VALID, "
    "CARD_EXPIRED, BATCH_DISABLED or MEMBER_LIMIT_REACHED.",
)
class CardUnavailableErrorType(ErrorType):
    pass


@strawberry.type(name="RateLimitedError", description="Too many failed attempts; wait before trying again.")
class RateLimitedErrorType(ErrorType):
    retry_after_seconds: int = strawberry.field(description="Seconds until attempts are accepted again.")


@strawberry.type(name="OsSelectionError", description="OS_REQUIRED or OS_NOT_ALLOWED.")
class OsSelectionErrorType(ErrorType):
    pass


@strawberry.type(name="OutOfStockError", description="The bare-metal model has no stock.")
class OutOfStockErrorType(ErrorType):
    pass


@strawberry.type(name="WrongPasswordError", description="Wrong username or password.")
class WrongPasswordErrorType(ErrorType):
    pass


@strawberry.type(
    name="InvalidStateError",
    description="The object's state does not allow this, e.g. disabling a used card.",
)
class InvalidStateErrorType(ErrorType):
    pass


@strawberry.type(
    name="IdempotencyConflictError",
    description="The idempotency key was already used with a different input.",
)
class IdempotencyConflictErrorType(ErrorType):
    pass


def _locale(info: Any) -> str:
    return getattr(info.context, "locale", DEFAULT_LOCALE)


class DomainErrorHandler:
    """Turns one domain exception class into one contract error type, wherever a field's union has it."""

    def __init__(self, exception_type: type[domain.DomainError], error_type: type[ErrorType]) -> None:
        self.exception_type = exception_type
        self.error_type = error_type

    def handle(self, exception: domain.DomainError, *, field: Any, info: Any) -> ErrorType:
        locale = _locale(info)
        message = render(exception.key, locale, **exception.params)
        code = exception.code
        if isinstance(exception, domain.InvalidInput):
            return InvalidInputErrorType(
                code=code,
                message=message,
                field_errors=[
                    FieldErrorType(field=p.field, message=render(p.key, locale, **p.params))
                    for p in exception.problems
                ],
            )
        if isinstance(exception, domain.RateLimited):
            return RateLimitedErrorType(
                code=code, message=message, retry_after_seconds=exception.retry_after_seconds
            )
        return self.error_type(code=code, message=message)


EXCEPTION_HANDLERS = [
    DomainErrorHandler(exception, error_type)
    for exception, error_type in [
        (domain.InvalidInput, InvalidInputErrorType),
        (domain.NotFound, NotFoundErrorType),
        (domain.CardCodeRejected, CardCodeErrorType),
        (domain.CardUnavailable, CardUnavailableErrorType),
        (domain.RateLimited, RateLimitedErrorType),
        (domain.OsSelectionRejected, OsSelectionErrorType),
        (domain.OutOfStock, OutOfStockErrorType),
        (domain.WrongPassword, WrongPasswordErrorType),
        (domain.InvalidState, InvalidStateErrorType),
        (domain.IdempotencyConflict, IdempotencyConflictErrorType),
    ]
]


def is_expected(error: GraphQLError) -> bool:
    """Errors that are answers, not bugs: access checks, malformed requests, GraphQL's own validation
    (a scalar's parser refusing an input value included)."""
    original = error.original_error
    return original is None or isinstance(
        original, domain.AccessDenied | domain.BadRequest | GraphQLError | InvalidScalarValue
    )


def shape_errors(errors: list[GraphQLError], context: Any) -> list[GraphQLError]:
    """Give every top-level error an `extensions.code`; mask anything unexpected (already logged with
    the request id by the schema), so a bug never leaks internals and can still be found from what
    the client saw. Applied to the whole result, so parse errors (raised before any extension runs)
    get their code too."""
    locale = getattr(context, "locale", DEFAULT_LOCALE)
    request_id = getattr(context, "request_id", None)
    return [_shape(error, locale, request_id) for error in errors]


def _shape(error: GraphQLError, locale: str, request_id: str | None) -> GraphQLError:
    original = error.original_error
    if isinstance(original, domain.AccessDenied):
        return _copy(error, render(original.code, locale), {"code": original.code})
    if isinstance(original, domain.BadRequest):
        return _copy(error, render(original.key, locale, **original.params), {"code": original.code})
    if is_expected(error):
        extensions = dict(error.extensions or {})
        if isinstance(error, GraphQLSyntaxError) or isinstance(original, GraphQLSyntaxError):
            extensions.setdefault("code", "GRAPHQL_PARSE_FAILED")
        extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED" if error.path is None else "BAD_REQUEST")
        return _copy(error, error.message, extensions)
    extensions = {"code": "INTERNAL_SERVER_ERROR"}
    if request_id:
        extensions["requestId"] = request_id
    return _copy(error, render("INTERNAL", locale), extensions)


def _copy(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def log_unexpected(errors: list[GraphQLError], request_id: str | None) -> None:
    for error in errors:
        if not is_expected(error):
            log.error(
                "unexpected error at %s (request %s)",
                ".".join(map(str, error.path or [])),
                request_id,
                exc_info=error.original_error,
            )
