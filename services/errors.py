"""The domain's exceptions. Each carries a stable code; the schema turns each class into one
contract error type (expected failures) or a top-level error (authentication, malformed requests).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class ErrorCode(enum.StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    INVALID_CODE = "INVALID_CODE"
    CARD_NOT_FOUND = "CARD_NOT_FOUND"
    CARD_USED = "CARD_USED"
    CARD_DISABLED = "CARD_DISABLED"
    CARD_EXPIRED = "CARD_EXPIRED"
    CARD_NOT_YET_VALID = "CARD_NOT_YET_VALID"
    MEMBER_LIMIT_REACHED = "MEMBER_LIMIT_REACHED"
    BATCH_DISABLED = "BATCH_DISABLED"
    OS_REQUIRED = "OS_REQUIRED"
    OS_NOT_ALLOWED = "OS_NOT_ALLOWED"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    RATE_LIMITED = "RATE_LIMITED"
    WRONG_PASSWORD = "WRONG_PASSWORD"
    INVALID_STATE = "INVALID_STATE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"


@dataclass(frozen=True)
class FieldProblem:
    """One bad input field: `field` is its path in the input (`config.diskGb`), `key` names the message."""

    field: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)


class DomainError(Exception):
    """An expected business failure. `key` and `params` choose and fill the human message."""

    code: ErrorCode

    def __init__(self, code: ErrorCode | None = None, key: str | None = None, **params: Any) -> None:
        if code is not None:
            self.code = code
        self.key = key or self.code.value
        self.params = params
        super().__init__(f"{self.code.value}: {self.key} {params}" if params else self.code.value)


class InvalidInput(DomainError):
    code = ErrorCode.INVALID_INPUT

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__()
        self.problems = problems

    def __str__(self) -> str:
        return "INVALID_INPUT: " + "; ".join(f"{p.field}: {p.key} {p.params}" for p in self.problems)


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class CardCodeRejected(DomainError):
    """INVALID_CODE or CARD_NOT_FOUND."""


class CardUnavailable(DomainError):
    """CARD_USED, CARD_DISABLED, CARD_NOT_YET_VALID, CARD_EXPIRED, BATCH_DISABLED or
    MEMBER_LIMIT_REACHED."""


class RateLimited(DomainError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(retry_after_seconds=retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class OsSelectionRejected(DomainError):
    """OS_REQUIRED or OS_NOT_ALLOWED."""


class OutOfStock(DomainError):
    code = ErrorCode.OUT_OF_STOCK


class WrongPassword(DomainError):
    code = ErrorCode.WRONG_PASSWORD


class InvalidState(DomainError):
    code = ErrorCode.INVALID_STATE


class IdempotencyConflict(DomainError):
    code = ErrorCode.IDEMPOTENCY_CONFLICT


class AccessDenied(Exception):
    """Not a business answer: the request may not be made at all (a top-level error)."""

    code = "FORBIDDEN"


class Unauthenticated(AccessDenied):
    code = "UNAUTHENTICATED"


class Forbidden(AccessDenied):
    code = "FORBIDDEN"


class BadRequest(Exception):
    """A malformed request (e.g. paging arguments out of range): a top-level INVALID_INPUT."""

    code = "INVALID_INPUT"

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params
