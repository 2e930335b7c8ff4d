"""Prices of product configurations (RULES §2): checking a configuration against its line, and the
monthly and whole-term prices, in Decimal, rounded half-up to 0.01 only at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from core.ids import parse_id
from models.base import ProductType
from models.catalog import HostingPlan, Line, ProductModel, Region
from services.errors import FieldProblem, InvalidInput, NotFound, OutOfStock
from services.runtime import Caller, Runtime

T = TypeVar("T")
Row = TypeVar("Row", Line, Region, ProductModel, HostingPlan)

CENT = Decimal("0.01")
UNBOUNDED_TIER = "*"


def round_money(amount: Decimal) -> Decimal:
    """Half-up to the cent: the one rounding a price ever gets."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------- pure price rules


def bandwidth_cost(tiers: Sequence[Sequence[str]], mbps: int) -> Decimal:
    """Tiered bandwidth: the Mbps above one tier's `upto` and up to the next cost that tier's price."""
    total = Decimal(0)
    previous = 0
    for upto, price in tiers:
        top = mbps if upto == UNBOUNDED_TIER else min(mbps, int(upto))
        if top <= previous:
            break
        total += (top - previous) * Decimal(price)
        previous = top
    return total


def cloud_server_monthly(
    pricing: Mapping[str, Any],
    *,
    cpu_cores: int,
    memory_gb: int,
    disk_gb: int,
    bandwidth_mbps: int,
    defense_gbps: int,
) -> Decimal:
    """M for a cloud server; `pricing` is a line's pricing JSON and the values are already checked."""
    charged_disk = max(0, disk_gb - int(pricing["disk_free_gb"]))
    return (
        Decimal(pricing["base"])
        + Decimal(pricing["cpu_core"]) * cpu_cores
        + Decimal(pricing["memory_gb"]) * memory_gb
        + Decimal(pricing["disk_gb"]) * charged_disk
        + bandwidth_cost(pricing["bandwidth_tiers"], bandwidth_mbps)
        + Decimal(pricing["defense"][str(defense_gbps)])
    )


def bare_metal_monthly(
    pricing: Mapping[str, Any],
    *,
    model_monthly: Decimal,
    included_ips: int,
    ip_count: int,
    bandwidth_mbps: int,
    defense_gbps: int,
) -> Decimal:
    """M for a bare-metal server of a model with `model_monthly` and `included_ips`."""
    extra_ips = max(0, ip_count - included_ips)
    return (
        Decimal(model_monthly)
        + Decimal(pricing["extra_ip"]) * extra_ips
        + bandwidth_cost(pricing["bandwidth_tiers"], bandwidth_mbps)
        + Decimal(pricing["defense"][str(defense_gbps)])
    )


def virtual_host_monthly(plan_monthly: Decimal) -> Decimal:
    """M for a virtual host: the plan's price as it stands."""
    return Decimal(plan_monthly)


@dataclass(frozen=True)
class Prices:
    monthly_linux: Decimal
    linux: Decimal
    windows: Decimal | None


def term_prices(monthly: Decimal, months: int, factor: Decimal, windows_surcharge: Decimal | None) -> Prices:
    """Prices for `months` at multiplier `factor`; no Windows price when `windows_surcharge` is None
    (a virtual host has no OS)."""
    windows = None
    if windows_surcharge is not None:
        windows = round_money((monthly + windows_surcharge) * months * factor)
    return Prices(
        monthly_linux=round_money(monthly), linux=round_money(monthly * months * factor), windows=windows
    )


# ---------------------------------------------------------------- configurations


@dataclass(frozen=True)
class ConfigInput:
    """A configuration as the client sends it; ids are strings, and which numbers apply depends on
    the product type."""

    product_type: ProductType
    line_id: str
    months: int
    cpu_cores: int | None = None
    memory_gb: int | None = None
    disk_gb: int | None = None
    bandwidth_mbps: int | None = None
    defense_gbps: int | None = None
    ip_count: int | None = None
    product_model_id: str | None = None
    plan_id: str | None = None


@dataclass(frozen=True)
class PricedConfig:
    """A checked configuration with its rows and prices; `ip_count` is the effective count (the model's
    included IPs when none was asked for)."""

    product_type: ProductType
    line: Line
    region: Region
    months: int
    cpu_cores: int | None
    memory_gb: int | None
    disk_gb: int | None
    bandwidth_mbps: int | None
    defense_gbps: int | None
    ip_count: int | None
    product_model: ProductModel | None
    plan: HostingPlan | None
    monthly_linux_price: Decimal
    linux_price: Decimal
    windows_price: Decimal | None

    def snapshot(self) -> dict[str, Any]:
        """The frozen copy kept on a batch: names as they are now, so catalog edits never change it."""
        model = self.product_model
        plan = self.plan
        return {
            "productType": self.product_type.value,
            "regionName": self.region.name,
            "lineName": self.line.name,
            "lineId": str(self.line.id),
            "months": self.months,
            "cpuCores": self.cpu_cores,
            "memoryGb": self.memory_gb,
            "diskGb": self.disk_gb,
            "bandwidthMbps": self.bandwidth_mbps,
            "defenseGbps": self.defense_gbps,
            "ipCount": self.ip_count,
            "productModelId": None if model is None else str(model.id),
            "productModelName": None if model is None else model.name,
            "modelCpu": None if model is None else model.cpu,
            "modelMemory": None if model is None else model.memory,
            "modelDisks": None if model is None else model.disks,
            "planId": None if plan is None else str(plan.id),
            "planName": None if plan is None else plan.name,
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """One line for people, in Chinese."""
        if self.product_model is not None:
            model = self.product_model
            parts = [
                model.name,
                f"CPU: {model.cpu}",
                f"内存: {model.memory}",
                f"磁盘: {model.disks}",
                f"IP: {self.ip_count} 个",
                f"带宽: {self.bandwidth_mbps} Mbps",
                f"防御: {self.defense_gbps} Gbps",
            ]
        elif self.plan is not None:
            parts = [self.plan.name, self.plan.description]
        else:
            parts = [
                f"{self.cpu_cores} 核",
                f"{self.memory_gb} GB 内存",
                f"{self.disk_gb} GB 磁盘",
                f"{self.bandwidth_mbps} Mbps",
                f"防御 {self.defense_gbps} Gbps",
            ]
        return " · ".join(part for part in parts if part)


class _Need(Enum):
    REQUIRED = "required"
    OPTIONAL = "optional"


# The fields each product takes; any other numeric or id field given a value is refused.
TAKES: dict[ProductType, dict[str, _Need]] = {
    ProductType.CLOUD_SERVER: {
        "cpu_cores": _Need.REQUIRED,
        "memory_gb": _Need.REQUIRED,
        "disk_gb": _Need.REQUIRED,
        "bandwidth_mbps": _Need.REQUIRED,
        "defense_gbps": _Need.REQUIRED,
    },
    ProductType.BARE_METAL: {
        "bandwidth_mbps": _Need.REQUIRED,
        "defense_gbps": _Need.REQUIRED,
        "ip_count": _Need.OPTIONAL,
        "product_model_id": _Need.REQUIRED,
    },
    ProductType.VIRTUAL_HOST: {"plan_id": _Need.REQUIRED},
}

# Input order, so problems come back in the order of the form.
FIELD_NAMES = {
    "cpu_cores": "cpuCores",
    "memory_gb": "memoryGb",
    "disk_gb": "diskGb",
    "bandwidth_mbps": "bandwidthMbps",
    "defense_gbps": "defenseGbps",
    "ip_count": "ipCount",
    "product_model_id": "productModelId",
    "plan_id": "planId",
}


def _allowed(values: Sequence[int]) -> str:
    return ", ".join(str(value) for value in values)


class _Checker:
    """Collects every problem of one configuration on one line."""

    def __init__(
        self,
        config: ConfigInput,
        line: Line,
        model: ProductModel | None,
        plan: HostingPlan | None,
        prefix: str,
    ) -> None:
        self.config = config
        self.line = line
        self.model = model
        self.plan = plan
        self.prefix = prefix
        self.problems: list[FieldProblem] = []

    def problem(self, name: str, key: str, **params: Any) -> None:
        self.problems.append(FieldProblem(field=self.prefix + name, key=key, params=params))

    def check(self) -> list[FieldProblem]:
        config = self.config
        if config.product_type.value not in self.line.product_types:
            self.problem("productType", "field.product_not_on_line", product_type=config.product_type.value)
        if str(config.months) not in self.line.durations:
            offered = [int(months) for months in self.line.durations]
            self.problem("months", "field.not_in_options", value=config.months, allowed=_allowed(offered))
        takes = TAKES[config.product_type]
        for attribute, name in FIELD_NAMES.items():
            value = getattr(config, attribute)
            need = takes.get(attribute)
            if need is None and value is not None:
                self.problem(name, "field.not_for_product", product_type=config.product_type.value)
            elif need is _Need.REQUIRED and value is None:
                self.problem(name, "field.required")
            elif value is not None:
                self.check_value(attribute, value)
        return self.problems

    def check_value(self, attribute: str, value: int | str) -> None:
        if attribute == "disk_gb":
            self.disk(int(value))
        elif attribute == "ip_count":
            self.ip_count(int(value))
        elif attribute == "product_model_id":
            self.belongs(attribute, self.model)
        elif attribute == "plan_id":
            self.belongs(attribute, self.plan)
        else:
            self.in_options(attribute, int(value))

    def in_options(self, attribute: str, value: int) -> None:
        choices = self.line.options[attribute]
        if value not in choices:
            self.problem(
                FIELD_NAMES[attribute], "field.not_in_options", value=value, allowed=_allowed(choices)
            )

    def disk(self, value: int) -> None:
        disk = self.line.options["disk_gb"]
        if not disk["min"] <= value <= disk["max"]:
            self.problem("diskGb", "field.out_of_range", min=disk["min"], max=disk["max"])
        elif (value - disk["min"]) % disk["step"]:
            self.problem("diskGb", "field.not_on_step", min=disk["min"], step=disk["step"])

    def ip_count(self, value: int) -> None:
        max_ips = self.line.options["max_ips"]
        if not 1 <= value <= max_ips:
            self.problem("ipCount", "field.out_of_range", min=1, max=max_ips)

    def belongs(self, attribute: str, row: ProductModel | HostingPlan | None) -> None:
        if row is None:
            self.problem(FIELD_NAMES[attribute], "field.not_found")
        elif row.line_id != self.line.id:
            self.problem(FIELD_NAMES[attribute], "field.not_on_line")


def _present(value: T | None) -> T:
    # only for values the checker has already required
    if value is None:
        raise AssertionError("a checked configuration value is missing")
    return value


async def _get(session: AsyncSession, model: type[Row], text: str | None) -> Row | None:
    parsed = parse_id(text)
    return None if parsed is None else await session.get(model, parsed)


async def price_config(
    session: AsyncSession, config: ConfigInput, *, field_prefix: str = "config."
) -> PricedConfig:
    """Check `config` against its line and price it. Unknown line: NotFound; anything else wrong:
    InvalidInput naming every bad field. Stock is not looked at (a quote never refuses for it)."""
    line = await _get(session, Line, config.line_id)
    if line is None:
        raise NotFound()
    takes = TAKES[config.product_type]
    model = (
        await _get(session, ProductModel, config.product_model_id) if "product_model_id" in takes else None
    )
    plan = await _get(session, HostingPlan, config.plan_id) if "plan_id" in takes else None
    problems = _Checker(config, line, model, plan, field_prefix).check()
    if problems:
        raise InvalidInput(problems)
    region = _present(await session.get(Region, line.region_id))
    return _priced(config, line, region, model, plan)


def _monthly(
    config: ConfigInput, line: Line, model: ProductModel | None, plan: HostingPlan | None
) -> Decimal:
    if config.product_type is ProductType.CLOUD_SERVER:
        return cloud_server_monthly(
            line.pricing,
            cpu_cores=_present(config.cpu_cores),
            memory_gb=_present(config.memory_gb),
            disk_gb=_present(config.disk_gb),
            bandwidth_mbps=_present(config.bandwidth_mbps),
            defense_gbps=_present(config.defense_gbps),
        )
    if config.product_type is ProductType.BARE_METAL:
        model = _present(model)
        return bare_metal_monthly(
            line.pricing,
            model_monthly=model.monthly,
            included_ips=model.included_ips,
            ip_count=_ip_count(config, model),
            bandwidth_mbps=_present(config.bandwidth_mbps),
            defense_gbps=_present(config.defense_gbps),
        )
    return virtual_host_monthly(_present(plan).monthly)


def _ip_count(config: ConfigInput, model: ProductModel | None) -> int | None:
    if model is None:
        return None
    return model.included_ips if config.ip_count is None else config.ip_count


def _priced(
    config: ConfigInput, line: Line, region: Region, model: ProductModel | None, plan: HostingPlan | None
) -> PricedConfig:
    factor = Decimal(line.durations[str(config.months)])
    surcharge = None if config.product_type is ProductType.VIRTUAL_HOST else line.windows_monthly_surcharge
    prices = term_prices(_monthly(config, line, model, plan), config.months, factor, surcharge)
    # the checker has refused every field the product does not take, so the others are None here
    return PricedConfig(
        product_type=config.product_type,
        line=line,
        region=region,
        months=config.months,
        cpu_cores=config.cpu_cores,
        memory_gb=config.memory_gb,
        disk_gb=config.disk_gb,
        bandwidth_mbps=config.bandwidth_mbps,
        defense_gbps=config.defense_gbps,
        ip_count=_ip_count(config, model),
        product_model=model,
        plan=plan,
        monthly_linux_price=prices.monthly_linux,
        linux_price=prices.linux,
        windows_price=prices.windows,
    )


def ensure_in_stock(priced: PricedConfig) -> None:
    """Batch creation's stock check (quotes skip it): a bare-metal model with no stock left is refused."""
    if priced.product_model is not None and priced.product_model.stock <= 0:
        raise OutOfStock()


async def quote(rt: Runtime, caller: Caller, config: ConfigInput) -> PricedConfig:
    """`quote`: admins only; prices without looking at stock."""
    caller.require_admin()
    async with rt.db.read() as session:
        return await price_config(session, config)
