"""The values of the catalog file, each read with its problem in the format's words: text that fits
its column, whole numbers, money that fits a Money column, multipliers, arrays of distinct items,
tables keyed by whole numbers, bandwidth tiers. The pydantic models of services/catalog_file.py are
made of them."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, PlainValidator, ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy import Column, String

from core.columns import Money
from models.base import OsFamily, ProductType

T = TypeVar("T")

SUPPORTED_CURRENCY = "CNY"
# every amount is stored in, or priced into, a Money column: NUMERIC(precision, scale)
MONEY_DECIMALS: int = Money.impl.scale
MONEY_LIMIT = Decimal(10) ** (Money.impl.precision - MONEY_DECIMALS)
_UNIT = Decimal(1).scaleb(-MONEY_DECIMALS)


# ---------------------------------------------------------------- problems


def problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("catalog", "{problem}", {"problem": message})


class Problems:
    """The problems one validator finds in a table or an array, each at its place inside the value."""

    def __init__(self) -> None:
        self.found: list[InitErrorDetails] = []

    def add(self, place: tuple[str | int, ...], message: str, value: Any) -> None:
        self.found.append({"type": problem(message), "loc": place, "input": value})

    def read(self, place: tuple[str | int, ...], read: Callable[[Any], T], value: Any) -> T | None:
        try:
            return read(value)
        except PydanticCustomError as exc:
            self.found.append({"type": exc, "loc": place, "input": value})
            return None

    def raise_any(self) -> None:
        if self.found:
            # raised inside a validator, pydantic keeps each of these at its place below the value
            raise ValidationError.from_exception_data("catalog", self.found)


def quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


# ---------------------------------------------------------------- single values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole_number(text: Any) -> int | None:
    """A TOML key or string such as "12" as an int; None for anything else ("1.5", "+3", "")."""
    if _is_int(text):
        return int(text)
    if isinstance(text, str) and text.isascii() and text.isdigit():
        return int(text)
    return None


def text_within(value: Any, width: int) -> str:
    if not isinstance(value, str):
        raise problem(f"must be a string, not {quote(value)}")
    if not value.strip():
        raise problem("must not be blank")
    if len(value) > width:
        raise problem(f"longer than {width} characters")
    return value


def fits(column: Column[Any]) -> PlainValidator:
    """Text that fits the mapped column it is stored in (a longer value would fail on PostgreSQL)."""
    assert isinstance(column.type, String) and column.type.length is not None, column
    width = column.type.length
    return PlainValidator(lambda value: text_within(value, width))


def whole(value: Any, minimum: int) -> int:
    if not _is_int(value):
        raise problem(f"must be a whole number, not {quote(value)}")
    if value < minimum:
        raise problem(f"must be at least {minimum}, not {value}")
    return int(value)


def at_least(minimum: int) -> PlainValidator:
    return PlainValidator(lambda value: whole(value, minimum))


def _decimal(value: Any, *, positive: bool) -> Decimal:
    # strings only: a TOML float such as 0.1 is already inexact before we see it
    if not isinstance(value, str):
        raise problem(f'must be a decimal string such as "8.66", not {quote(value)}')
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise problem(f"{quote(value)} is not a decimal number")
    if positive and number <= 0:
        raise problem(f"{quote(value)} must be more than 0")
    if number < 0:
        raise problem(f"{quote(value)} must not be negative")
    return number


def money(value: Any) -> Decimal:
    """An amount of yuan: a string, not negative, fitting a Money column."""
    amount = _decimal(value, positive=False)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_DECIMALS:
        raise problem(f"{quote(value)} has more than {MONEY_DECIMALS} decimals")
    if amount >= MONEY_LIMIT:
        raise problem(f"{quote(value)} is too large")
    return amount.quantize(_UNIT)


def _factor(value: Any) -> str:
    # "1.00" and "1" are the same multiplier; store one spelling so reloads compare equal
    return format(_decimal(value, positive=True).normalize(), "f")


def os_family(value: Any) -> OsFamily:
    if not isinstance(value, str) or value not in OsFamily.__members__:
        raise problem(f"{quote(value)} is not one of {', '.join(OsFamily)}")
    return OsFamily(value)


def product_type(value: Any) -> ProductType:
    if not isinstance(value, str) or value not in ProductType.__members__:
        raise problem(f"unknown product type {quote(value)} (one of {', '.join(ProductType)})")
    return ProductType(value)


def network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text))
    except ValueError as exc:
        raise problem(f"{quote(text)} is not a network: {exc}") from None


def supported_currency(value: Any) -> str:
    text = text_within(value, len(SUPPORTED_CURRENCY))
    if text != SUPPORTED_CURRENCY:
        raise problem(f'only "{SUPPORTED_CURRENCY}" is supported, not {quote(text)}')
    return text


# ---------------------------------------------------------------- arrays and tables


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise problem("must be a table")
    return value


def distinct(
    read: Callable[[Any, ValidationInfo], T],
    not_an_array: str,
    *,
    empty: str | None = None,
    strings: bool = False,
) -> PlainValidator:
    """An array whose items are each read and must not repeat; `empty` is the problem with none."""

    def read_all(value: Any, info: ValidationInfo) -> tuple[T, ...]:
        if not isinstance(value, list) or (strings and not all(isinstance(item, str) for item in value)):
            raise problem(not_an_array)
        if empty is not None and not value:
            raise problem(empty)
        problems = Problems()
        found: list[T] = []
        for index, item in enumerate(value):
            read_item = problems.read((index,), lambda one: read(one, info), item)
            if read_item is None:
                continue
            if read_item in found:
                problems.add((index,), f"duplicate {quote(item)}", item)
            found.append(read_item)
        problems.raise_any()
        return tuple(found)

    return PlainValidator(read_all)


def array_of_tables(value: Any, info: ValidationInfo) -> list[Any]:
    if not isinstance(value, list):
        raise problem(f"must be an array of tables ([[{info.field_name}]])")
    return value


def _by_number(
    table: dict[str, Any],
    problems: Problems,
    number: str,
    minimum: int,
    read: Callable[[Any], T],
    listed: Sequence[int] | None = None,
) -> dict[int, T]:
    """A table keyed by whole numbers, such as { "1" = "1", "12" = "0.85" }: each key a distinct number
    of at least `minimum` (one of the `listed` peaks, if given), each value read."""
    found: dict[int, T] = {}
    for key, item in table.items():
        read_item = problems.read((key,), read, item)
        key_number = _whole_number(key)
        if key_number is None or key_number < minimum:
            problems.add((), f"{quote(key)} is not a {number}", key)
        elif key_number in found:
            problems.add((), f"{quote(key)} is a duplicate of {key_number}", key)
        elif listed is not None and key_number not in listed:
            problems.add((), f"{quote(key)} is not a listed peak", key)
        elif read_item is not None:
            found[key_number] = read_item
    return found


def month_factors(value: Any) -> dict[str, str]:
    table = _table(value)
    if not table:
        raise problem("must list at least one number of months")
    problems = Problems()
    months = _by_number(table, problems, "positive whole number of months", 1, _factor)
    problems.raise_any()
    return {str(count): months[count] for count in sorted(months)}


def defense_prices(value: Any, peaks: Sequence[int] | None) -> dict[int, Decimal]:
    """Peak (Gbps) -> price: a price for each of `peaks`, if they are known, and for no other."""
    table = _table(value)
    problems = Problems()
    prices = _by_number(table, problems, "whole number of Gbps", 0, money, listed=peaks)
    for peak in peaks or ():
        if peak not in prices and str(peak) not in table:
            problems.add((), f"no price for listed peak {peak}", peak)
    problems.raise_any()
    # in the order of options.defense_gbps, so the stored JSON reads like the file
    return {peak: prices[peak] for peak in (peaks or sorted(prices))}


def tiers(value: Any) -> list[tuple[str, Decimal]]:
    """Bandwidth tiers [[upto, price], ...]: upto rising, in Mbps, the last one "*"."""
    if not isinstance(value, list) or not value:
        raise problem('must be a non-empty array of [upto, price] pairs, the last upto "*"')
    problems = Problems()
    found: list[tuple[str, Decimal]] = []
    previous = 0
    for index, tier in enumerate(value):
        if not isinstance(tier, list) or len(tier) != 2:
            problems.add((index,), "must be a pair [upto, price]", tier)
            continue
        upto, price = tier
        amount = problems.read((index, 1), money, price)
        if upto == "*":
            if index != len(value) - 1:
                problems.add((index,), '"*" must be the last tier', upto)
        elif (limit := _whole_number(upto)) is None or limit < 1:
            problems.add((index, 0), f'{quote(upto)} is not a positive whole number of Mbps or "*"', upto)
        elif limit <= previous:
            problems.add((index, 0), f"{limit} must be more than the tier before ({previous})", upto)
        else:
            previous = limit
        if amount is not None:
            found.append((upto if upto == "*" else str(upto), amount))
    last = value[-1]
    if isinstance(last, list) and len(last) == 2 and last[0] != "*":
        problems.add((), 'the last tier must be ["*", price]', last)
    problems.raise_any()
    return found


# ---------------------------------------------------------------- as field types

Amount = Annotated[Decimal, PlainValidator(money)]
Positive = Annotated[int, at_least(1)]
NotNegative = Annotated[int, at_least(0)]


def _whole_numbers(minimum: int) -> PlainValidator:
    not_an_array = "must be a non-empty array of whole numbers"
    return distinct(lambda value, _: whole(value, minimum), not_an_array, empty=not_an_array)


# option lists are stored as JSON arrays
PositiveNumbers = Annotated[list[int], _whole_numbers(1), AfterValidator(list)]
NotNegativeNumbers = Annotated[list[int], _whole_numbers(0), AfterValidator(list)]
