"""The catalog: parsing and checking the catalog TOML file, loading it into the database (upsert by
`code`), and the reads the GraphQL layer makes of regions, lines, images, models and plans.
"""

from __future__ import annotations

import copy
import ipaddress
import tomllib
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from core.ids import parse_id
from models.base import OsFamily, ProductType
from models.catalog import HostingPlan, Line, OsImage, ProductModel, Region, line_os_images
from services.runtime import Caller, Runtime

T = TypeVar("T")

# Column widths in models/catalog.py; a longer value would fail (PostgreSQL) or be kept silently (SQLite).
CODE_LENGTH = 64
NAME_LENGTH = 100
HARDWARE_LENGTH = 200
DESCRIPTION_LENGTH = 500
IP_POOL_LENGTH = 64
# Money is NUMERIC(14, 2): 12 digits before the point.
MONEY_LIMIT = Decimal(10) ** 12
CENT = Decimal("0.01")

TOP_KEYS = ("currency", "regions", "os_images", "lines", "product_models", "hosting_plans")
REGION_KEYS = ("code", "name")
OS_IMAGE_KEYS = ("code", "name", "family")
LINE_KEYS = (
    "code",
    "region",
    "name",
    "product_types",
    "os_images",
    "ip_pool",
    "windows_monthly_surcharge",
    "durations",
    "options",
    "pricing",
)
OPTION_KEYS = ("cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps", "defense_gbps", "max_ips")
DISK_KEYS = ("min", "max", "step")
PRICING_KEYS = (
    "base",
    "cpu_core",
    "memory_gb",
    "disk_gb",
    "disk_free_gb",
    "extra_ip",
    "bandwidth_tiers",
    "defense",
)
PRICING_MONEY_KEYS = ("base", "cpu_core", "memory_gb", "disk_gb", "extra_ip")
PRODUCT_MODEL_KEYS = ("code", "line", "name", "cpu", "memory", "disks", "monthly", "included_ips", "stock")
HOSTING_PLAN_KEYS = ("code", "line", "name", "description", "monthly")
SUPPORTED_CURRENCY = "CNY"


class CatalogError(Exception):
    """The catalog file is not acceptable; `problems` lists every fault as "place: message"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------- the checked file


@dataclass(frozen=True)
class RegionData:
    code: str
    name: str


@dataclass(frozen=True)
class OsImageData:
    code: str
    name: str
    family: OsFamily


@dataclass(frozen=True)
class LineData:
    """A line as it will be stored: `durations`, `options` and `pricing` are the JSON kept on the row,
    in canonical form (money as "0.00" strings), so comparing them with a stored row is exact.
    """

    code: str
    region: str
    name: str
    product_types: tuple[ProductType, ...]
    os_images: tuple[str, ...]
    ip_pool: str
    windows_monthly_surcharge: Decimal
    durations: dict[str, str]
    options: dict[str, Any]
    pricing: dict[str, Any]


@dataclass(frozen=True)
class ProductModelData:
    code: str
    line: str
    name: str
    cpu: str
    memory: str
    disks: str
    monthly: Decimal
    included_ips: int
    stock: int


@dataclass(frozen=True)
class HostingPlanData:
    code: str
    line: str
    name: str
    description: str
    monthly: Decimal


@dataclass(frozen=True)
class CatalogData:
    currency: str
    regions: tuple[RegionData, ...]
    os_images: tuple[OsImageData, ...]
    lines: tuple[LineData, ...]
    product_models: tuple[ProductModelData, ...]
    hosting_plans: tuple[HostingPlanData, ...]


def parse_catalog(text: str) -> CatalogData:
    """Read a catalog file and check all of it; raises CatalogError listing every problem found."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError([f"file: not valid TOML: {exc}"]) from None
    parser = _Parser()
    data = parser.catalog(document)
    if parser.problems or data is None:
        raise CatalogError(parser.problems)
    return data


def demo_catalog_text() -> str:
    """The bundled demo catalog (tihuo/demo_catalog.toml), for `tihuo serve --demo`."""
    return resources.files("tihuo").joinpath("demo_catalog.toml").read_text(encoding="utf-8")


def _checked(value: T | None) -> T:
    # Only called once an entry is known to have no problems, so every part parsed.
    if value is None:
        raise AssertionError("a checked catalog value is missing")
    return value


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole_number(text: Any) -> int | None:
    """A TOML key or string such as "12" as an int; None for anything else ("1.5", "+3", "")."""
    if _is_int(text):
        return int(text)
    if isinstance(text, str) and text.isascii() and text.isdigit():
        return int(text)
    return None


def _canonical_factor(value: Decimal) -> str:
    # "1.00" and "1" are the same multiplier; store one spelling so reloads compare equal.
    return format(value.normalize(), "f")


class _Parser:
    """Walks the TOML document, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, place: str, message: str) -> None:
        self.problems.append(f"{place}: {message}")

    # ------------------------------------------------------------ the document

    def catalog(self, document: dict[str, Any]) -> CatalogData | None:
        self.unknown_keys(document, TOP_KEYS, "")
        currency = self.currency(document)
        raw_regions = self.entries(document, "regions", required=True)
        raw_images = self.entries(document, "os_images", required=True)
        raw_lines = self.entries(document, "lines", required=True)
        raw_models = self.entries(document, "product_models", required=False)
        raw_plans = self.entries(document, "hosting_plans", required=False)

        region_codes = self.codes("regions", raw_regions)
        image_codes = self.codes("os_images", raw_images)
        line_codes = self.codes("lines", raw_lines)
        self.codes("product_models", raw_models)
        self.codes("hosting_plans", raw_plans)

        regions = [self.region(raw, f"regions[{i}]") for i, raw in raw_regions]
        images = [self.os_image(raw, f"os_images[{i}]") for i, raw in raw_images]
        lines = [self.line(raw, f"lines[{i}]", region_codes, image_codes) for i, raw in raw_lines]
        parsed_lines: dict[str, LineData] = {}
        for line in lines:
            # with a duplicate code (already reported), references go to the first line of that code
            if line is not None:
                parsed_lines.setdefault(line.code, line)
        models = [
            self.product_model(raw, f"product_models[{i}]", line_codes, parsed_lines) for i, raw in raw_models
        ]
        plans = [
            self.hosting_plan(raw, f"hosting_plans[{i}]", line_codes, parsed_lines) for i, raw in raw_plans
        ]
        if self.problems or currency is None:
            return None
        return CatalogData(
            currency=currency,
            regions=tuple(_checked(r) for r in regions),
            os_images=tuple(_checked(i) for i in images),
            lines=tuple(_checked(line) for line in lines),
            product_models=tuple(_checked(m) for m in models),
            hosting_plans=tuple(_checked(p) for p in plans),
        )

    def currency(self, document: dict[str, Any]) -> str | None:
        currency = self.string(document, "currency", "", max_length=3)
        if currency is not None and currency != SUPPORTED_CURRENCY:
            self.problem("currency", f'only "{SUPPORTED_CURRENCY}" is supported, not {_quote(currency)}')
            return None
        return currency

    def entries(
        self, document: dict[str, Any], key: str, *, required: bool
    ) -> list[tuple[int, dict[str, Any]]]:
        """The tables of an array such as [[lines]], with their index in the file."""
        value = document.get(key)
        if value is None:
            if required:
                self.problem(key, "required")
            return []
        if not isinstance(value, list):
            self.problem(key, f"must be an array of tables ([[{key}]])")
            return []
        found = []
        for index, entry in enumerate(value):
            if isinstance(entry, dict):
                found.append((index, entry))
            else:
                self.problem(f"{key}[{index}]", "must be a table")
        return found

    def codes(self, kind: str, entries: list[tuple[int, dict[str, Any]]]) -> set[str]:
        """Every code of a kind, reporting duplicates; an entry broken otherwise still counts, so its
        references are not reported a second time as unknown."""
        seen: set[str] = set()
        for index, entry in entries:
            code = entry.get("code")
            if not isinstance(code, str) or not code.strip():
                continue
            if code in seen:
                self.problem(f"{kind}[{index}].code", f"duplicate {_quote(code)}")
            seen.add(code)
        return seen

    # ------------------------------------------------------------ entries

    def region(self, raw: dict[str, Any], place: str) -> RegionData | None:
        before = len(self.problems)
        self.unknown_keys(raw, REGION_KEYS, place)
        code = self.string(raw, "code", place, max_length=CODE_LENGTH)
        name = self.string(raw, "name", place, max_length=NAME_LENGTH)
        if len(self.problems) > before:
            return None
        return RegionData(code=_checked(code), name=_checked(name))

    def os_image(self, raw: dict[str, Any], place: str) -> OsImageData | None:
        before = len(self.problems)
        self.unknown_keys(raw, OS_IMAGE_KEYS, place)
        code = self.string(raw, "code", place, max_length=CODE_LENGTH)
        name = self.string(raw, "name", place, max_length=NAME_LENGTH)
        family = self.os_family(raw, "family", place)
        if len(self.problems) > before:
            return None
        return OsImageData(code=_checked(code), name=_checked(name), family=_checked(family))

    def line(
        self, raw: dict[str, Any], place: str, region_codes: set[str], image_codes: set[str]
    ) -> LineData | None:
        before = len(self.problems)
        self.unknown_keys(raw, LINE_KEYS, place)
        code = self.string(raw, "code", place, max_length=CODE_LENGTH)
        region = self.reference(raw, "region", place, region_codes, "region")
        name = self.string(raw, "name", place, max_length=NAME_LENGTH)
        product_types = self.product_types(raw, place)
        os_images = self.line_images(raw, place, image_codes, product_types)
        ip_pool = self.ip_pool(raw, place)
        surcharge = self.money_at(raw, "windows_monthly_surcharge", place)
        durations = self.durations(raw, place)
        options = self.options(raw, place)
        pricing = self.pricing(raw, place, options.get("defense_gbps") if options else None)
        if len(self.problems) > before:
            return None
        return LineData(
            code=_checked(code),
            region=_checked(region),
            name=_checked(name),
            product_types=_checked(product_types),
            os_images=_checked(os_images),
            ip_pool=_checked(ip_pool),
            windows_monthly_surcharge=_checked(surcharge),
            durations=_checked(durations),
            options=_checked(options),
            pricing=_checked(pricing),
        )

    def product_model(
        self, raw: dict[str, Any], place: str, line_codes: set[str], lines: Mapping[str, LineData]
    ) -> ProductModelData | None:
        before = len(self.problems)
        self.unknown_keys(raw, PRODUCT_MODEL_KEYS, place)
        code = self.string(raw, "code", place, max_length=CODE_LENGTH)
        line = self.reference(raw, "line", place, line_codes, "line")
        name = self.string(raw, "name", place, max_length=NAME_LENGTH)
        cpu = self.string(raw, "cpu", place, max_length=HARDWARE_LENGTH)
        memory = self.string(raw, "memory", place, max_length=HARDWARE_LENGTH)
        disks = self.string(raw, "disks", place, max_length=HARDWARE_LENGTH)
        monthly = self.money_at(raw, "monthly", place)
        included_ips = self.integer(raw, "included_ips", place, minimum=1)
        stock = self.integer(raw, "stock", place, minimum=0)
        line_data = lines.get(line) if line else None
        if line_data is not None:
            self.offers(line_data, ProductType.BARE_METAL, f"{place}.line")
            max_ips = line_data.options["max_ips"]
            if included_ips is not None and included_ips > max_ips:
                self.problem(
                    f"{place}.included_ips",
                    f"{included_ips} is more than line {_quote(line_data.code)} allows (max_ips {max_ips})",
                )
        if len(self.problems) > before:
            return None
        return ProductModelData(
            code=_checked(code),
            line=_checked(line),
            name=_checked(name),
            cpu=_checked(cpu),
            memory=_checked(memory),
            disks=_checked(disks),
            monthly=_checked(monthly),
            included_ips=_checked(included_ips),
            stock=_checked(stock),
        )

    def hosting_plan(
        self, raw: dict[str, Any], place: str, line_codes: set[str], lines: Mapping[str, LineData]
    ) -> HostingPlanData | None:
        before = len(self.problems)
        self.unknown_keys(raw, HOSTING_PLAN_KEYS, place)
        code = self.string(raw, "code", place, max_length=CODE_LENGTH)
        line = self.reference(raw, "line", place, line_codes, "line")
        name = self.string(raw, "name", place, max_length=NAME_LENGTH)
        description = self.string(raw, "description", place, max_length=DESCRIPTION_LENGTH)
        monthly = self.money_at(raw, "monthly", place)
        line_data = lines.get(line) if line else None
        if line_data is not None:
            self.offers(line_data, ProductType.VIRTUAL_HOST, f"{place}.line")
        if len(self.problems) > before:
            return None
        return HostingPlanData(
            code=_checked(code),
            line=_checked(line),
            name=_checked(name),
            description=_checked(description),
            monthly=_checked(monthly),
        )

    def offers(self, line: LineData, product_type: ProductType, place: str) -> None:
        if product_type not in line.product_types:
            self.problem(place, f"line {_quote(line.code)} does not offer {product_type.value}")

    # ------------------------------------------------------------ parts of a line

    def product_types(self, raw: dict[str, Any], place: str) -> tuple[ProductType, ...] | None:
        where = f"{place}.product_types"
        items = self.string_list(raw, "product_types", place)
        if items is None:
            return None
        if not items:
            self.problem(where, "must list at least one product type")
            return None
        allowed = ", ".join(t.value for t in ProductType)
        found: list[ProductType] = []
        for index, item in enumerate(items):
            if item not in ProductType.__members__:
                self.problem(f"{where}[{index}]", f"unknown product type {_quote(item)} (one of {allowed})")
            elif ProductType(item) in found:
                self.problem(f"{where}[{index}]", f"duplicate {_quote(item)}")
            else:
                found.append(ProductType(item))
        return tuple(found) if len(found) == len(items) else None

    def line_images(
        self,
        raw: dict[str, Any],
        place: str,
        image_codes: set[str],
        product_types: tuple[ProductType, ...] | None,
    ) -> tuple[str, ...] | None:
        where = f"{place}.os_images"
        items = self.string_list(raw, "os_images", place)
        if items is None:
            return None
        ok = True
        for index, item in enumerate(items):
            if item not in image_codes:
                self.problem(f"{where}[{index}]", f"unknown image {_quote(item)}")
                ok = False
            elif item in items[:index]:
                self.problem(f"{where}[{index}]", f"duplicate {_quote(item)}")
                ok = False
        # cloud servers and bare metal need an OS at redemption (OS_REQUIRED): with none listed,
        # every card on the line could never be redeemed
        needs_image = product_types and {ProductType.CLOUD_SERVER, ProductType.BARE_METAL} & set(
            product_types
        )
        if needs_image and not items:
            self.problem(where, "must list at least one image for CLOUD_SERVER or BARE_METAL")
            ok = False
        return tuple(items) if ok else None

    def ip_pool(self, raw: dict[str, Any], place: str) -> str | None:
        text = self.string(raw, "ip_pool", place, max_length=IP_POOL_LENGTH)
        if text is None:
            return None
        try:
            return str(ipaddress.ip_network(text))
        except ValueError as exc:
            self.problem(f"{place}.ip_pool", f"{_quote(text)} is not a network: {exc}")
            return None

    def durations(self, raw: dict[str, Any], place: str) -> dict[str, str] | None:
        where = f"{place}.durations"
        table = self.table(raw, "durations", place)
        if table is None:
            return None
        if not table:
            self.problem(where, "must list at least one number of months")
            return None
        before = len(self.problems)
        found: dict[int, str] = {}
        for key, value in table.items():
            months = _whole_number(key)
            factor = self.decimal(value, f"{where}.{key}", positive=True)
            if months is None or months < 1:
                self.problem(where, f"{_quote(key)} is not a positive whole number of months")
            elif months in found:
                self.problem(where, f"{_quote(key)} is a duplicate of {months}")
            elif factor is not None:
                found[months] = _canonical_factor(factor)
        if len(self.problems) > before:
            return None
        return {str(months): found[months] for months in sorted(found)}

    def options(self, raw: dict[str, Any], place: str) -> dict[str, Any] | None:
        where = f"{place}.options"
        table = self.table(raw, "options", place)
        if table is None:
            return None
        self.unknown_keys(table, OPTION_KEYS, where)
        options = {
            "cpu_cores": self.int_list(table, "cpu_cores", where, minimum=1),
            "memory_gb": self.int_list(table, "memory_gb", where, minimum=1),
            "disk_gb": self.disk_range(table, where),
            "bandwidth_mbps": self.int_list(table, "bandwidth_mbps", where, minimum=1),
            "defense_gbps": self.int_list(table, "defense_gbps", where, minimum=0),
            "max_ips": self.integer(table, "max_ips", where, minimum=1),
        }
        # handed back even when partly broken: pricing.defense is still checked against a good peak list
        return options

    def disk_range(self, options: dict[str, Any], place: str) -> dict[str, int] | None:
        where = f"{place}.disk_gb"
        table = self.table(options, "disk_gb", place)
        if table is None:
            return None
        before = len(self.problems)
        self.unknown_keys(table, DISK_KEYS, where)
        low = self.integer(table, "min", where, minimum=1)
        high = self.integer(table, "max", where, minimum=1)
        step = self.integer(table, "step", where, minimum=1)
        if low is not None and high is not None and step is not None:
            if high < low:
                self.problem(where, f"max {high} is less than min {low}")
            elif (high - low) % step:
                self.problem(where, f"max {high} is not min {low} plus a multiple of step {step}")
        if len(self.problems) > before:
            return None
        return {"min": _checked(low), "max": _checked(high), "step": _checked(step)}

    def pricing(self, raw: dict[str, Any], place: str, peaks: list[int] | None) -> dict[str, Any] | None:
        where = f"{place}.pricing"
        table = self.table(raw, "pricing", place)
        if table is None:
            return None
        before = len(self.problems)
        self.unknown_keys(table, PRICING_KEYS, where)
        pricing: dict[str, Any] = {}
        for key in PRICING_MONEY_KEYS:
            amount = self.money_at(table, key, where)
            pricing[key] = None if amount is None else str(amount)
        pricing["disk_free_gb"] = self.integer(table, "disk_free_gb", where, minimum=0)
        pricing["bandwidth_tiers"] = self.bandwidth_tiers(table, where)
        pricing["defense"] = self.defense_prices(table, where, peaks)
        if len(self.problems) > before:
            return None
        return pricing

    def bandwidth_tiers(self, pricing: dict[str, Any], place: str) -> list[list[str]] | None:
        where = f"{place}.bandwidth_tiers"
        value = pricing.get("bandwidth_tiers")
        if value is None:
            self.problem(where, "required")
            return None
        if not isinstance(value, list) or not value:
            self.problem(where, 'must be a non-empty array of [upto, price] pairs, the last upto "*"')
            return None
        before = len(self.problems)
        tiers: list[list[str]] = []
        previous = 0
        for index, tier in enumerate(value):
            here = f"{where}[{index}]"
            if not isinstance(tier, list) or len(tier) != 2:
                self.problem(here, "must be a pair [upto, price]")
                continue
            upto, price = tier
            amount = self.money(price, f"{here}[1]")
            if upto == "*":
                if index != len(value) - 1:
                    self.problem(here, '"*" must be the last tier')
            elif (limit := _whole_number(upto)) is None or limit < 1:
                self.problem(f"{here}[0]", f'{_quote(upto)} is not a positive whole number of Mbps or "*"')
            elif limit <= previous:
                self.problem(f"{here}[0]", f"{limit} must be more than the tier before ({previous})")
            else:
                previous = limit
            if amount is not None:
                tiers.append([upto if upto == "*" else str(upto), str(amount)])
        last = value[-1]
        if isinstance(last, list) and len(last) == 2 and last[0] != "*":
            self.problem(where, 'the last tier must be ["*", price]')
        return tiers if len(self.problems) == before else None

    def defense_prices(
        self, pricing: dict[str, Any], place: str, peaks: list[int] | None
    ) -> dict[str, str] | None:
        where = f"{place}.defense"
        table = self.table(pricing, "defense", place)
        if table is None:
            return None
        before = len(self.problems)
        prices: dict[int, str] = {}
        for key, value in table.items():
            peak = _whole_number(key)
            amount = self.money(value, f"{where}.{key}")
            if peak is None:
                self.problem(where, f"{_quote(key)} is not a whole number of Gbps")
            elif peak in prices:
                self.problem(where, f"{_quote(key)} is a duplicate of {peak}")
            elif peaks is not None and peak not in peaks:
                self.problem(where, f"{_quote(key)} is not a listed peak")
            elif amount is not None:
                prices[peak] = str(amount)
        for peak in peaks or ():
            if peak not in prices and str(peak) not in table:
                self.problem(where, f"no price for listed peak {peak}")
        if len(self.problems) > before:
            return None
        # in the order of options.defense_gbps, so the stored JSON reads like the file
        return {str(peak): prices[peak] for peak in (peaks or sorted(prices))}

    # ------------------------------------------------------------ typed values

    def unknown_keys(self, table: dict[str, Any], allowed: Collection[str], place: str) -> None:
        for key in table:
            if key not in allowed:
                self.problem(f"{place}.{key}" if place else key, "unknown key")

    def present(self, table: dict[str, Any], key: str, place: str) -> tuple[str, Any]:
        where = f"{place}.{key}" if place else key
        value = table.get(key)
        if value is None:
            self.problem(where, "required")
        return where, value

    def string(self, table: dict[str, Any], key: str, place: str, *, max_length: int) -> str | None:
        where, value = self.present(table, key, place)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(where, f"must be a string, not {_quote(value)}")
            return None
        if not value.strip():
            self.problem(where, "must not be blank")
            return None
        if len(value) > max_length:
            self.problem(where, f"longer than {max_length} characters")
            return None
        return value

    def reference(
        self, table: dict[str, Any], key: str, place: str, known: set[str], kind: str
    ) -> str | None:
        code = self.string(table, key, place, max_length=CODE_LENGTH)
        if code is not None and code not in known:
            self.problem(f"{place}.{key}", f"unknown {kind} {_quote(code)}")
            return None
        return code

    def os_family(self, table: dict[str, Any], key: str, place: str) -> OsFamily | None:
        where, value = self.present(table, key, place)
        if value is None:
            return None
        if value not in OsFamily.__members__:
            allowed = ", ".join(member.value for member in OsFamily)
            self.problem(where, f"{_quote(value)} is not one of {allowed}")
            return None
        return OsFamily(value)

    def integer(self, table: dict[str, Any], key: str, place: str, *, minimum: int) -> int | None:
        where, value = self.present(table, key, place)
        if value is None:
            return None
        if not _is_int(value):
            self.problem(where, f"must be a whole number, not {_quote(value)}")
            return None
        if value < minimum:
            self.problem(where, f"must be at least {minimum}, not {value}")
            return None
        return int(value)

    def table(self, table: dict[str, Any], key: str, place: str) -> dict[str, Any] | None:
        where, value = self.present(table, key, place)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(where, "must be a table")
            return None
        return value

    def string_list(self, table: dict[str, Any], key: str, place: str) -> list[str] | None:
        where, value = self.present(table, key, place)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problem(where, "must be an array of strings")
            return None
        return value

    def int_list(self, table: dict[str, Any], key: str, place: str, *, minimum: int) -> list[int] | None:
        where, value = self.present(table, key, place)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.problem(where, "must be a non-empty array of whole numbers")
            return None
        before = len(self.problems)
        for index, item in enumerate(value):
            if not _is_int(item):
                self.problem(f"{where}[{index}]", f"must be a whole number, not {_quote(item)}")
            elif item < minimum:
                self.problem(f"{where}[{index}]", f"must be at least {minimum}, not {item}")
            elif item in value[:index]:
                self.problem(f"{where}[{index}]", f"duplicate {item}")
        return [int(item) for item in value] if len(self.problems) == before else None

    def money_at(self, table: dict[str, Any], key: str, place: str) -> Decimal | None:
        where, value = self.present(table, key, place)
        return None if value is None else self.money(value, where)

    def money(self, value: Any, place: str) -> Decimal | None:
        """An amount of yuan: a string, at most 2 decimals, not negative, fitting NUMERIC(14, 2)."""
        amount = self.decimal(value, place, positive=False)
        if amount is None:
            return None
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            self.problem(place, f"{_quote(value)} has more than 2 decimals")
            return None
        if amount >= MONEY_LIMIT:
            self.problem(place, f"{_quote(value)} is too large")
            return None
        return amount.quantize(CENT)

    def decimal(self, value: Any, place: str, *, positive: bool) -> Decimal | None:
        # strings only: a TOML float such as 0.1 is already inexact before we see it
        if not isinstance(value, str):
            self.problem(place, f'must be a decimal string such as "8.66", not {_quote(value)}')
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            self.problem(place, f"{_quote(value)} is not a decimal number")
            return None
        if positive and number <= 0:
            self.problem(place, f"{_quote(value)} must be more than 0")
            return None
        if number < 0:
            self.problem(place, f"{_quote(value)} must not be negative")
            return None
        return number


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class KindReport:
    """What loading did to the rows of one kind."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class LoadReport:
    regions: KindReport
    os_images: KindReport
    lines: KindReport
    product_models: KindReport
    hosting_plans: KindReport

    def kinds(self) -> dict[str, KindReport]:
        return {
            "regions": self.regions,
            "os_images": self.os_images,
            "lines": self.lines,
            "product_models": self.product_models,
            "hosting_plans": self.hosting_plans,
        }

    @property
    def changed(self) -> bool:
        return any(kind.inserted or kind.updated for kind in self.kinds().values())

    def summary(self) -> str:
        """One line per kind, for the command line."""
        return "\n".join(
            f"{name}: {kind.inserted} inserted, {kind.updated} updated, {kind.unchanged} unchanged"
            for name, kind in self.kinds().items()
        )


CatalogRow = TypeVar("CatalogRow", Region, OsImage, Line, ProductModel, HostingPlan)


@dataclass
class _Upserted(Generic[CatalogRow]):
    rows: dict[str, CatalogRow]
    inserted: set[str]
    updated: set[str]

    def report(self) -> KindReport:
        return KindReport(
            inserted=len(self.inserted),
            updated=len(self.updated),
            unchanged=len(self.rows) - len(self.inserted) - len(self.updated),
        )


async def load_catalog(db: Database, data: CatalogData) -> LoadReport:
    """Upsert the whole catalog by `code` in one transaction. Rows missing from the file stay as they
    are (batches and orders refer to them); loading the same file again changes nothing."""
    async with db.write() as session:
        regions = await _upsert(session, Region, {r.code: {"name": r.name} for r in data.regions})
        images = await _upsert(
            session, OsImage, {i.code: {"name": i.name, "family": i.family} for i in data.os_images}
        )
        lines = await _upsert(
            session,
            Line,
            {
                line.code: _line_values(line, position, regions.rows[line.region].id)
                for position, line in enumerate(data.lines)
            },
        )
        for code in await _set_line_images(session, lines.rows, images.rows, data.lines):
            if code not in lines.inserted:
                lines.updated.add(code)
        models = await _upsert(
            session,
            ProductModel,
            {m.code: _product_model_values(m, lines.rows[m.line].id) for m in data.product_models},
        )
        plans = await _upsert(
            session,
            HostingPlan,
            {p.code: _hosting_plan_values(p, lines.rows[p.line].id) for p in data.hosting_plans},
        )
    return LoadReport(
        regions=regions.report(),
        os_images=images.report(),
        lines=lines.report(),
        product_models=models.report(),
        hosting_plans=plans.report(),
    )


async def load_catalog_text(db: Database, text: str) -> LoadReport:
    """Check a catalog file and load it: nothing is written unless all of it is acceptable."""
    return await load_catalog(db, parse_catalog(text))


def _line_values(line: LineData, position: int, region_id: int) -> dict[str, Any]:
    # deep copies: the row's JSON must not share mutable lists with the frozen CatalogData
    return {
        "region_id": region_id,
        "name": line.name,
        "position": position,
        "product_types": [t.value for t in line.product_types],
        "ip_pool": line.ip_pool,
        "windows_monthly_surcharge": line.windows_monthly_surcharge,
        "durations": copy.deepcopy(line.durations),
        "options": copy.deepcopy(line.options),
        "pricing": copy.deepcopy(line.pricing),
    }


def _product_model_values(model: ProductModelData, line_id: int) -> dict[str, Any]:
    return {
        "line_id": line_id,
        "name": model.name,
        "cpu": model.cpu,
        "memory": model.memory,
        "disks": model.disks,
        "monthly": model.monthly,
        "included_ips": model.included_ips,
        "stock": model.stock,
    }


def _hosting_plan_values(plan: HostingPlanData, line_id: int) -> dict[str, Any]:
    return {"line_id": line_id, "name": plan.name, "description": plan.description, "monthly": plan.monthly}


async def _upsert(
    session: AsyncSession, model: type[CatalogRow], wanted: dict[str, dict[str, Any]]
) -> _Upserted[CatalogRow]:
    """Insert the codes not yet stored; on stored rows set only the fields that differ."""
    result = await session.scalars(select(model).where(model.code.in_(list(wanted))))
    existing = {row.code: row for row in result}
    upserted: _Upserted[CatalogRow] = _Upserted(rows={}, inserted=set(), updated=set())
    for code, values in wanted.items():
        row = existing.get(code)
        if row is None:
            row = model(code=code, **values)
            session.add(row)
            upserted.inserted.add(code)
        else:
            changed = {name: value for name, value in values.items() if getattr(row, name) != value}
            for name, value in changed.items():
                setattr(row, name, value)
            if changed:
                upserted.updated.add(code)
        upserted.rows[code] = row
    await session.flush()
    return upserted


async def _set_line_images(
    session: AsyncSession, lines: Mapping[str, Line], images: Mapping[str, OsImage], data: Sequence[LineData]
) -> set[str]:
    """Make each line's images exactly the listed ones; returns the codes of lines whose set changed."""
    current: dict[int, set[int]] = defaultdict(set)
    pairs = await session.execute(
        select(line_os_images.c.line_id, line_os_images.c.os_image_id).where(
            line_os_images.c.line_id.in_([row.id for row in lines.values()])
        )
    )
    for line_id, image_id in pairs:
        current[line_id].add(image_id)
    changed: set[str] = set()
    for line in data:
        line_id = lines[line.code].id
        wanted = {images[code].id for code in line.os_images}
        have = current[line_id]
        if wanted == have:
            continue
        changed.add(line.code)
        if have - wanted:
            await session.execute(
                delete(line_os_images).where(
                    line_os_images.c.line_id == line_id, line_os_images.c.os_image_id.in_(have - wanted)
                )
            )
        if wanted - have:
            await session.execute(
                insert(line_os_images),
                [{"line_id": line_id, "os_image_id": image_id} for image_id in sorted(wanted - have)],
            )
    return changed


# ---------------------------------------------------------------- reads


def _offers(line: Line, product_type: ProductType | None) -> bool:
    # product_types is a JSON list; the catalog is small, so filtering here beats two JSON dialects
    return product_type is None or product_type.value in line.product_types


async def list_regions(db: Database, product_type: ProductType | None = None) -> list[Region]:
    """All regions, or those with at least one line offering `product_type`; by id."""
    async with db.read() as session:
        if product_type is None:
            return list(await session.scalars(select(Region).order_by(Region.id)))
        lines = await session.scalars(select(Line))
        region_ids = {line.region_id for line in lines if _offers(line, product_type)}
        if not region_ids:
            return []
        return list(
            await session.scalars(select(Region).where(Region.id.in_(region_ids)).order_by(Region.id))
        )


async def lines_for_regions(
    db: Database, region_ids: Iterable[int], product_type: ProductType | None = None
) -> dict[int, list[Line]]:
    """Lines of each region (every id given is a key), offering `product_type` if given; by position, id."""
    ids = list(dict.fromkeys(region_ids))
    found: dict[int, list[Line]] = {region_id: [] for region_id in ids}
    if not ids:
        return found
    async with db.read() as session:
        lines = await session.scalars(
            select(Line).where(Line.region_id.in_(ids)).order_by(Line.position, Line.id)
        )
        for line in lines:
            if _offers(line, product_type):
                found[line.region_id].append(line)
    return found


async def os_images_for_lines(db: Database, line_ids: Iterable[int]) -> dict[int, list[OsImage]]:
    """Images of each line (every id given is a key), Linux before Windows, then by name."""
    ids = list(dict.fromkeys(line_ids))
    found: dict[int, list[OsImage]] = {line_id: [] for line_id in ids}
    if not ids:
        return found
    async with db.read() as session:
        rows = await session.execute(
            select(line_os_images.c.line_id, OsImage)
            .join(OsImage, OsImage.id == line_os_images.c.os_image_id)
            .where(line_os_images.c.line_id.in_(ids))
            .order_by(OsImage.family, OsImage.name, OsImage.id)
        )
        for line_id, image in rows:
            found[line_id].append(image)
    return found


async def regions_by_ids(db: Database, ids: Iterable[int]) -> dict[int, Region]:
    """The regions with these ids; ids with no region are simply absent."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    async with db.read() as session:
        regions = await session.scalars(select(Region).where(Region.id.in_(wanted)))
        return {region.id: region for region in regions}


async def product_models_for_line(db: Database, line_id: int) -> list[ProductModel]:
    """The line's bare-metal models, by id (stock 0 included: the client shows it as sold out)."""
    async with db.read() as session:
        result = await session.scalars(
            select(ProductModel).where(ProductModel.line_id == line_id).order_by(ProductModel.id)
        )
        return list(result)


async def hosting_plans_for_line(db: Database, line_id: int) -> list[HostingPlan]:
    """The line's virtual-host plans, by id."""
    async with db.read() as session:
        result = await session.scalars(
            select(HostingPlan).where(HostingPlan.line_id == line_id).order_by(HostingPlan.id)
        )
        return list(result)


# ---------------------------------------------------------------- reads with their permission check


async def browse_regions(
    rt: Runtime, caller: Caller, product_type: ProductType | None = None
) -> list[Region]:
    """`regions`: anyone signed in."""
    caller.require_signed_in()
    return await list_regions(rt.db, None if product_type is None else ProductType(product_type))


async def browse_product_models(rt: Runtime, caller: Caller, line_id: str) -> list[ProductModel]:
    """`productModels(lineId)`: anyone signed in; an unknown line has none."""
    caller.require_signed_in()
    parsed = parse_id(line_id)
    return [] if parsed is None else await product_models_for_line(rt.db, parsed)


async def browse_hosting_plans(rt: Runtime, caller: Caller, line_id: str) -> list[HostingPlan]:
    """`hostingPlans(lineId)`: anyone signed in; an unknown line has none."""
    caller.require_signed_in()
    parsed = parse_id(line_id)
    return [] if parsed is None else await hosting_plans_for_line(rt.db, parsed)


async def os_images_by_ids(db: Database, ids: Iterable[int]) -> dict[int, OsImage]:
    """For DataLoaders: images by id."""
    async with db.read() as session:
        result = await session.scalars(select(OsImage).where(OsImage.id.in_(list(ids))))
        return {image.id: image for image in result}
