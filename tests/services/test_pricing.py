"""Pricing (RULES §2): the worked examples of the catalog format, every refusal of a configuration,
and properties of the price rules checked with Hypothesis."""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from core.db import Database
from models import HostingPlan, Line, ProductModel, ProductType, Role
from services.catalog_file import parse_catalog
from services.catalog_loading import load_catalog
from services.errors import Forbidden, InvalidInput, NotFound, OutOfStock, Unauthenticated
from services.pricing import (
    ConfigInput,
    PricedConfig,
    bandwidth_cost,
    bare_metal_monthly,
    cloud_server_monthly,
    ensure_in_stock,
    price_config,
    quote,
    round_money,
    term_prices,
    virtual_host_monthly,
)
from services.runtime import Caller, Runtime, Viewer

FIXTURE = Path(__file__).parent.parent / "fixtures" / "catalog.toml"
SH_BGP_PRICING = parse_catalog(FIXTURE.read_text(encoding="utf-8")).lines[0].pricing

ADMIN = Caller(viewer=Viewer(id=1, username="admin", role=Role.ADMIN))
MEMBER = Caller(viewer=Viewer(id=2, username="member", role=Role.MEMBER))


@pytest.fixture
async def ids(db: Database) -> dict[str, str]:
    """The example catalog loaded; the ids (as the API sends them) of its lines, model and plan by code."""
    await load_catalog(db, parse_catalog(FIXTURE.read_text(encoding="utf-8")))
    found: dict[str, str] = {}
    async with db.read() as session:
        for model in (Line, ProductModel, HostingPlan):
            for code, row_id in await session.execute(select(model.code, model.id)):
                found[code] = str(row_id)
    return found


async def _price(db: Database, config: ConfigInput, **kwargs: Any) -> PricedConfig:
    async with db.read() as session:
        return await price_config(session, config, **kwargs)


async def _problems(db: Database, config: ConfigInput) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as raised:
        await _price(db, config)
    return [(problem.field, problem.key) for problem in raised.value.problems]


def _cloud(line_id: str, **changes: Any) -> ConfigInput:
    config = ConfigInput(
        product_type=ProductType.CLOUD_SERVER,
        line_id=line_id,
        months=1,
        cpu_cores=1,
        memory_gb=1,
        disk_gb=10,
        bandwidth_mbps=10,
        defense_gbps=0,
    )
    return replace(config, **changes)


def _bare_metal(line_id: str, model_id: str, **changes: Any) -> ConfigInput:
    config = ConfigInput(
        product_type=ProductType.BARE_METAL,
        line_id=line_id,
        months=3,
        bandwidth_mbps=10,
        defense_gbps=10,
        ip_count=3,
        product_model_id=model_id,
    )
    return replace(config, **changes)


def _virtual_host(line_id: str, plan_id: str | None, **changes: Any) -> ConfigInput:
    config = ConfigInput(product_type=ProductType.VIRTUAL_HOST, line_id=line_id, months=1, plan_id=plan_id)
    return replace(config, **changes)


# ---------------------------------------------------------------- the worked examples


async def test_cloud_server_for_one_month_costs_83_66(db: Database, ids: dict[str, str]) -> None:
    # given the sh-bgp cloud server of the first worked example
    config = _cloud(ids["sh-bgp"])

    # when it is priced
    priced = await _price(db, config)

    # then M = 8.66 + 25 + 15 + 0 + 35 + 0, for one month at factor 1; Windows costs nothing extra here
    assert priced.monthly_linux_price == Decimal("83.66")
    assert priced.linux_price == Decimal("83.66")
    assert priced.windows_price == Decimal("83.66")


async def test_cloud_server_for_twelve_months_costs_853_33(db: Database, ids: dict[str, str]) -> None:
    # given the same server for 12 months (factor 0.85)
    config = _cloud(ids["sh-bgp"], months=12)

    # when it is priced
    priced = await _price(db, config)

    # then 83.66 × 12 × 0.85 = 853.332 is rounded only at the end
    assert priced.monthly_linux_price == Decimal("83.66")
    assert priced.linux_price == Decimal("853.33")
    assert priced.windows_price == Decimal("853.33")
    assert priced.months == 12


async def test_bare_metal_with_three_ips_for_three_months_costs_3222(
    db: Database, ids: dict[str, str]
) -> None:
    # given bm-e5-2650 with 3 IPs (1 included), 10 Mbps and 10 Gbps for 3 months
    config = _bare_metal(ids["sh-bgp"], ids["bm-e5-2650"])

    # when it is priced
    priced = await _price(db, config)

    # then M = 899 + 2×20 + 35 + 100 = 1074, × 3 × 1
    assert priced.monthly_linux_price == Decimal("1074.00")
    assert priced.linux_price == Decimal("3222.00")
    assert priced.windows_price == Decimal("3222.00")
    assert priced.ip_count == 3


async def test_bare_metal_ip_count_defaults_to_the_included_ips(db: Database, ids: dict[str, str]) -> None:
    # given the same server with no ipCount
    config = _bare_metal(ids["sh-bgp"], ids["bm-e5-2650"], ip_count=None)

    # when it is priced
    priced = await _price(db, config)

    # then it has the model's one included IP and no extra-IP charge: 899 + 35 + 100 = 1034
    assert priced.ip_count == 1
    assert priced.monthly_linux_price == Decimal("1034.00")
    assert priced.linux_price == Decimal("3102.00")


async def test_hk_cn2_charges_a_windows_surcharge(db: Database, ids: dict[str, str]) -> None:
    # given the hk-cn2 example: 2 cores, 2 GB, 40 GB, 5 Mbps, 1 month
    config = _cloud(ids["hk-cn2"], cpu_cores=2, memory_gb=2, disk_gb=40, bandwidth_mbps=5, defense_gbps=0)

    # when it is priced
    priced = await _price(db, config)

    # then M = 20 + 70 + 36 + 20 + (75 + 80) = 301, and Windows adds the line's 30.00
    assert priced.monthly_linux_price == Decimal("301.00")
    assert priced.linux_price == Decimal("301.00")
    assert priced.windows_price == Decimal("331.00")


@pytest.mark.parametrize(
    ("months", "expected"),
    [(1, "15.00"), (3, "45.00"), (6, "85.50"), (12, "153.00"), (24, "270.00"), (36, "351.00")],
)
async def test_virtual_host_costs_the_plan_times_months_times_factor(
    db: Database, ids: dict[str, str], months: int, expected: str
) -> None:
    # given vh-basic (15.00 a month) for some duration of sh-bgp
    config = _virtual_host(ids["sh-bgp"], ids["vh-basic"], months=months)

    # when it is priced
    priced = await _price(db, config)

    # then it costs 15.00 × months × factor, and has no Windows price (no OS)
    assert priced.monthly_linux_price == Decimal("15.00")
    assert priced.linux_price == Decimal(expected)
    assert priced.windows_price is None


def test_ten_mbps_cost_35_with_the_example_tiers() -> None:
    # given the tiers [["5","3.00"],["*","4.00"]]
    tiers = [["5", "3.00"], ["*", "4.00"]]

    # when 10 Mbps are priced, then 5×3.00 + 5×4.00
    assert bandwidth_cost(tiers, 10) == Decimal("35.00")
    assert bandwidth_cost(tiers, 5) == Decimal("15.00")
    assert bandwidth_cost(tiers, 0) == Decimal("0")


def test_rounding_is_half_up_to_the_cent() -> None:
    assert round_money(Decimal("853.332")) == Decimal("853.33")
    assert round_money(Decimal("0.005")) == Decimal("0.01")
    assert round_money(Decimal("2.675")) == Decimal("2.68")
    assert str(round_money(Decimal("15"))) == "15.00"


# ---------------------------------------------------------------- the frozen copy


async def test_cloud_server_snapshot(db: Database, ids: dict[str, str]) -> None:
    # given a priced cloud server
    priced = await _price(db, _cloud(ids["hk-cn2"], cpu_cores=2, memory_gb=4, disk_gb=50, bandwidth_mbps=5))

    # when its frozen copy is taken
    snapshot = priced.snapshot()

    # then it names everything as it is now, and fields of other products are null
    assert snapshot == {
        "productType": "CLOUD_SERVER",
        "regionName": "中国香港",
        "lineName": "香港 CN2",
        "lineId": ids["hk-cn2"],
        "months": 1,
        "cpuCores": 2,
        "memoryGb": 4,
        "diskGb": 50,
        "bandwidthMbps": 5,
        "defenseGbps": 0,
        "ipCount": None,
        "productModelId": None,
        "productModelName": None,
        "modelCpu": None,
        "modelMemory": None,
        "modelDisks": None,
        "planId": None,
        "planName": None,
        "summary": "2 核 · 4 GB 内存 · 50 GB 磁盘 · 5 Mbps · 防御 0 Gbps",
    }


async def test_bare_metal_snapshot(db: Database, ids: dict[str, str]) -> None:
    # given a priced bare-metal server
    priced = await _price(db, _bare_metal(ids["sh-bgp"], ids["bm-e5-2650"]))

    # when its frozen copy is taken
    snapshot = priced.snapshot()

    # then the model's hardware is copied and the summary reads like the order form
    assert snapshot == {
        "productType": "BARE_METAL",
        "regionName": "华东-上海",
        "lineName": "上海 BGP",
        "lineId": ids["sh-bgp"],
        "months": 3,
        "cpuCores": None,
        "memoryGb": None,
        "diskGb": None,
        "bandwidthMbps": 10,
        "defenseGbps": 10,
        "ipCount": 3,
        "productModelId": ids["bm-e5-2650"],
        "productModelName": "E5-2650 v4 双路",
        "modelCpu": "Intel E5-2650 v4 12核24线程 ×2",
        "modelMemory": "DDR4 64GB",
        "modelDisks": "SSD 480GB ×1, SATA 2TB ×1",
        "planId": None,
        "planName": None,
        "summary": (
            "E5-2650 v4 双路 · CPU: Intel E5-2650 v4 12核24线程 ×2 · 内存: DDR4 64GB"
            " · 磁盘: SSD 480GB ×1, SATA 2TB ×1 · IP: 3 个 · 带宽: 10 Mbps · 防御: 10 Gbps"
        ),
    }


async def test_virtual_host_snapshot(db: Database, ids: dict[str, str]) -> None:
    # given a priced virtual host
    priced = await _price(db, _virtual_host(ids["sh-bgp"], ids["vh-basic"], months=12))

    # when its frozen copy is taken
    snapshot = priced.snapshot()

    # then the plan is named and described, and no server numbers are set
    assert snapshot["planId"] == ids["vh-basic"]
    assert snapshot["planName"] == "入门型虚拟主机"
    assert snapshot["summary"] == "入门型虚拟主机 · 网页空间 2GB · 数据库 200MB · 月流量 50GB"
    assert snapshot["months"] == 12
    assert [snapshot[key] for key in ("cpuCores", "bandwidthMbps", "ipCount", "productModelId")] == [None] * 4


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("line_id", ["999", "abc", "", "-1", "1.0", "1" * 40])
async def test_an_unknown_line_is_not_found(db: Database, ids: dict[str, str], line_id: str) -> None:
    # given a line id that names no line
    # when a configuration on it is priced, then NOT_FOUND (not a field problem)
    with pytest.raises(NotFound):
        await _price(db, _cloud(line_id))


async def test_months_not_offered_names_the_choices(db: Database, ids: dict[str, str]) -> None:
    # given 2 months, which sh-bgp does not offer
    config = _cloud(ids["sh-bgp"], months=2)

    # when it is priced
    with pytest.raises(InvalidInput) as raised:
        await _price(db, config)

    # then exactly the months are refused, with the value and the choices for the message
    assert [(p.field, p.key, p.params) for p in raised.value.problems] == [
        ("config.months", "field.not_in_options", {"value": 2, "allowed": "1, 3, 6, 12, 24, 36"})
    ]


async def test_disk_problems_carry_their_bounds(db: Database, ids: dict[str, str]) -> None:
    # given disks below the minimum and off the step on hk-cn2 (20..200, step 10)
    low = _cloud(ids["hk-cn2"], disk_gb=10, bandwidth_mbps=5)
    off_step = _cloud(ids["hk-cn2"], disk_gb=25, bandwidth_mbps=5)

    # when they are priced, then each names its bound
    with pytest.raises(InvalidInput) as raised_low:
        await _price(db, low)
    with pytest.raises(InvalidInput) as raised_step:
        await _price(db, off_step)
    assert [(p.field, p.key, p.params) for p in raised_low.value.problems] == [
        ("config.diskGb", "field.out_of_range", {"min": 20, "max": 200})
    ]
    assert [(p.field, p.key, p.params) for p in raised_step.value.problems] == [
        ("config.diskGb", "field.not_on_step", {"min": 20, "step": 10})
    ]


CLOUD_CASES = [
    pytest.param(
        {"cpu_cores": None, "memory_gb": None, "disk_gb": None, "bandwidth_mbps": None, "defense_gbps": None},
        [
            ("config.cpuCores", "field.required"),
            ("config.memoryGb", "field.required"),
            ("config.diskGb", "field.required"),
            ("config.bandwidthMbps", "field.required"),
            ("config.defenseGbps", "field.required"),
        ],
        id="all-numbers-missing",
    ),
    pytest.param(
        {"ip_count": 2, "product_model_id": "1", "plan_id": "1"},
        [
            ("config.ipCount", "field.not_for_product"),
            ("config.productModelId", "field.not_for_product"),
            ("config.planId", "field.not_for_product"),
        ],
        id="other-products-fields",
    ),
    pytest.param(
        {"cpu_cores": 3, "memory_gb": 3, "bandwidth_mbps": 3, "defense_gbps": 15},
        [
            ("config.cpuCores", "field.not_in_options"),
            ("config.memoryGb", "field.not_in_options"),
            ("config.bandwidthMbps", "field.not_in_options"),
            ("config.defenseGbps", "field.not_in_options"),
        ],
        id="values-not-listed",
    ),
    pytest.param({"disk_gb": 0}, [("config.diskGb", "field.out_of_range")], id="disk-below-min"),
    pytest.param({"disk_gb": 510}, [("config.diskGb", "field.out_of_range")], id="disk-above-max"),
    pytest.param({"disk_gb": 15}, [("config.diskGb", "field.not_on_step")], id="disk-off-step"),
    pytest.param({"cpu_cores": -1}, [("config.cpuCores", "field.not_in_options")], id="negative-cores"),
    pytest.param(
        {"months": 0, "cpu_cores": 32, "disk_gb": None, "ip_count": 1},
        [
            ("config.months", "field.not_in_options"),
            ("config.cpuCores", "field.not_in_options"),
            ("config.diskGb", "field.required"),
            ("config.ipCount", "field.not_for_product"),
        ],
        id="every-problem-at-once",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), CLOUD_CASES)
async def test_cloud_server_refusals(
    db: Database, ids: dict[str, str], changes: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    # given a cloud server on sh-bgp with some fields wrong
    config = _cloud(ids["sh-bgp"], **changes)

    # when it is priced, then every wrong field is named, in the order of the form
    assert await _problems(db, config) == expected


BARE_METAL_CASES = [
    pytest.param(
        {"product_model_id": None, "bandwidth_mbps": None, "defense_gbps": None},
        [
            ("config.bandwidthMbps", "field.required"),
            ("config.defenseGbps", "field.required"),
            ("config.productModelId", "field.required"),
        ],
        id="required-missing",
    ),
    pytest.param(
        {"cpu_cores": 2, "disk_gb": 20, "plan_id": "1"},
        [
            ("config.cpuCores", "field.not_for_product"),
            ("config.diskGb", "field.not_for_product"),
            ("config.planId", "field.not_for_product"),
        ],
        id="cloud-server-fields",
    ),
    pytest.param({"ip_count": 0}, [("config.ipCount", "field.out_of_range")], id="no-ips"),
    pytest.param({"ip_count": 9}, [("config.ipCount", "field.out_of_range")], id="more-than-max-ips"),
    pytest.param(
        {"product_model_id": "999"}, [("config.productModelId", "field.not_found")], id="no-such-model"
    ),
    pytest.param({"product_model_id": "abc"}, [("config.productModelId", "field.not_found")], id="not-an-id"),
    pytest.param(
        {"bandwidth_mbps": 7, "defense_gbps": 30},
        [("config.bandwidthMbps", "field.not_in_options"), ("config.defenseGbps", "field.not_in_options")],
        id="values-not-listed",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), BARE_METAL_CASES)
async def test_bare_metal_refusals(
    db: Database, ids: dict[str, str], changes: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    # given a bare-metal server on sh-bgp with some fields wrong
    config = _bare_metal(ids["sh-bgp"], ids["bm-e5-2650"], **changes)

    # when it is priced, then every wrong field is named
    assert await _problems(db, config) == expected


async def test_ip_count_range_is_one_to_max_ips(db: Database, ids: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as raised:
        await _price(db, _bare_metal(ids["sh-bgp"], ids["bm-e5-2650"], ip_count=9))
    assert [(p.field, p.key, p.params) for p in raised.value.problems] == [
        ("config.ipCount", "field.out_of_range", {"min": 1, "max": 8})
    ]


async def test_bare_metal_on_a_line_without_it(db: Database, ids: dict[str, str]) -> None:
    # given the sh-bgp model asked for on hk-cn2, which offers cloud servers only
    config = _bare_metal(ids["hk-cn2"], ids["bm-e5-2650"], defense_gbps=0, ip_count=None, months=1)

    # when it is priced, then both the product type and the model are refused
    assert await _problems(db, config) == [
        ("config.productType", "field.product_not_on_line"),
        ("config.productModelId", "field.not_on_line"),
    ]


async def test_virtual_host_refusals(db: Database, ids: dict[str, str]) -> None:
    # given a plan of sh-bgp on hk-cn2 for 3 months (hk-cn2 has 1 and 12), with a bandwidth
    config = _virtual_host(ids["hk-cn2"], ids["vh-basic"], months=3, bandwidth_mbps=5)

    # when it is priced, then everything wrong is named
    assert await _problems(db, config) == [
        ("config.productType", "field.product_not_on_line"),
        ("config.months", "field.not_in_options"),
        ("config.bandwidthMbps", "field.not_for_product"),
        ("config.planId", "field.not_on_line"),
    ]


@pytest.mark.parametrize(
    ("plan_id", "expected"),
    [(None, "field.required"), ("999", "field.not_found"), ("x1", "field.not_found")],
)
async def test_virtual_host_plan_must_exist(
    db: Database, ids: dict[str, str], plan_id: str | None, expected: str
) -> None:
    config = _virtual_host(ids["sh-bgp"], plan_id)
    assert await _problems(db, config) == [("config.planId", expected)]


async def test_field_names_take_the_given_prefix(db: Database, ids: dict[str, str]) -> None:
    # given a bad configuration priced as part of a bigger input
    with pytest.raises(InvalidInput) as raised:
        await _price(db, _cloud(ids["sh-bgp"], cpu_cores=3), field_prefix="input.config.")

    # then the field is named from the root of that input
    assert [p.field for p in raised.value.problems] == ["input.config.cpuCores"]


# ---------------------------------------------------------------- stock and permission


async def test_a_quote_ignores_stock_but_a_batch_is_refused(db: Database, ids: dict[str, str]) -> None:
    # given the model sold out
    async with db.write() as session:
        await session.execute(update(ProductModel).where(ProductModel.code == "bm-e5-2650").values(stock=0))

    # when it is priced, then it still has a price
    priced = await _price(db, _bare_metal(ids["sh-bgp"], ids["bm-e5-2650"]))
    assert priced.linux_price == Decimal("3222.00")

    # but the stock check made when creating a batch refuses it
    with pytest.raises(OutOfStock):
        ensure_in_stock(priced)


async def test_stock_check_passes_with_stock_and_without_a_model(db: Database, ids: dict[str, str]) -> None:
    bare_metal = await _price(db, _bare_metal(ids["sh-bgp"], ids["bm-e5-2650"]))
    cloud = await _price(db, _cloud(ids["sh-bgp"]))
    assert ensure_in_stock(bare_metal) is None
    assert ensure_in_stock(cloud) is None


async def test_quote_prices_for_an_admin(rt: Runtime, ids: dict[str, str]) -> None:
    priced = await quote(rt, ADMIN, _cloud(ids["sh-bgp"], months=12))
    assert (priced.monthly_linux_price, priced.linux_price) == (Decimal("83.66"), Decimal("853.33"))


@pytest.mark.parametrize(("caller", "error"), [(MEMBER, Forbidden), (Caller(), Unauthenticated)])
async def test_quote_checks_the_caller_before_anything_else(
    rt: Runtime, caller: Caller, error: type[Exception]
) -> None:
    # given no catalog at all: an unknown line would be NOT_FOUND
    # when someone other than an admin asks, then the permission answer comes first
    with pytest.raises(error):
        await quote(rt, caller, _cloud("999"))


# ---------------------------------------------------------------- properties of the rules

money = st.decimals(min_value=0, max_value=5000, places=2, allow_nan=False, allow_infinity=False)
factors = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1.50"), places=2)


@st.composite
def tier_lists(draw: st.DrawFn) -> list[list[str]]:
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=200), max_size=4)))
    prices = draw(st.lists(money, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    return [[str(upto), str(price)] for upto, price in zip([*bounds, "*"], prices, strict=True)]


@st.composite
def pricings(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "base": str(draw(money)),
        "cpu_core": str(draw(money)),
        "memory_gb": str(draw(money)),
        "disk_gb": str(draw(money)),
        "disk_free_gb": draw(st.integers(min_value=0, max_value=50)),
        "extra_ip": str(draw(money)),
        "bandwidth_tiers": draw(tier_lists()),
        "defense": {"0": "0.00", "10": str(draw(money))},
    }


@st.composite
def cloud_numbers(draw: st.DrawFn) -> dict[str, int]:
    return {
        "cpu_cores": draw(st.integers(min_value=1, max_value=64)),
        "memory_gb": draw(st.integers(min_value=1, max_value=256)),
        "disk_gb": draw(st.integers(min_value=1, max_value=2000)),
        "bandwidth_mbps": draw(st.integers(min_value=1, max_value=300)),
        "defense_gbps": draw(st.sampled_from([0, 10])),
    }


def _unit_price(tiers: list[list[str]], unit: int) -> Decimal:
    """The price of the `unit`-th Mbps: that of the first tier reaching it."""
    for upto, price in tiers:
        if upto == "*" or unit <= int(upto):
            return Decimal(price)
    raise AssertionError("tiers end with *")


def _reference_monthly(pricing: dict[str, Any], numbers: dict[str, int]) -> Decimal:
    # RULES §2 written out again, bandwidth one Mbps at a time, to check the implementation against
    bandwidth = sum(
        (_unit_price(pricing["bandwidth_tiers"], unit) for unit in range(1, numbers["bandwidth_mbps"] + 1)),
        Decimal(0),
    )
    disk = max(0, numbers["disk_gb"] - pricing["disk_free_gb"])
    return (
        Decimal(pricing["base"])
        + Decimal(pricing["cpu_core"]) * numbers["cpu_cores"]
        + Decimal(pricing["memory_gb"]) * numbers["memory_gb"]
        + Decimal(pricing["disk_gb"]) * disk
        + bandwidth
        + Decimal(pricing["defense"][str(numbers["defense_gbps"])])
    )


@given(
    pricing=pricings(),
    numbers=cloud_numbers(),
    dimension=st.sampled_from(["cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps"]),
    more=st.integers(min_value=0, max_value=500),
)
def test_more_of_anything_never_costs_less(
    pricing: dict[str, Any], numbers: dict[str, int], dimension: str, more: int
) -> None:
    bigger = {**numbers, dimension: numbers[dimension] + more}
    assert cloud_server_monthly(pricing, **bigger) >= cloud_server_monthly(pricing, **numbers)


@given(
    pricing=pricings(),
    model_monthly=money,
    included_ips=st.integers(min_value=1, max_value=4),
    ip_count=st.integers(min_value=1, max_value=16),
    more=st.integers(min_value=0, max_value=16),
)
def test_more_ips_never_cost_less(
    pricing: dict[str, Any], model_monthly: Decimal, included_ips: int, ip_count: int, more: int
) -> None:
    def monthly(ips: int) -> Decimal:
        return bare_metal_monthly(
            pricing,
            model_monthly=model_monthly,
            included_ips=included_ips,
            ip_count=ips,
            bandwidth_mbps=10,
            defense_gbps=0,
        )

    assert monthly(ip_count + more) >= monthly(ip_count)


@given(
    pricing=pricings(),
    numbers=cloud_numbers(),
    months=st.integers(min_value=1, max_value=36),
    factor=factors,
    surcharge=money,
)
def test_term_prices_match_the_rule_computed_independently(
    pricing: dict[str, Any], numbers: dict[str, int], months: int, factor: Decimal, surcharge: Decimal
) -> None:
    # given M from the rule written out again
    expected_monthly = _reference_monthly(pricing, numbers)

    # when the implementation prices the same configuration
    monthly = cloud_server_monthly(pricing, **numbers)
    prices = term_prices(monthly, months, factor, surcharge)

    # then M agrees exactly, and each price is rounded half-up once, at the end
    cent = Decimal("0.01")
    assert monthly == expected_monthly
    assert prices.monthly_linux == expected_monthly.quantize(cent, rounding=ROUND_HALF_UP)
    assert prices.linux == (expected_monthly * months * factor).quantize(cent, rounding=ROUND_HALF_UP)
    assert prices.windows == ((expected_monthly + surcharge) * months * factor).quantize(
        cent, rounding=ROUND_HALF_UP
    )


@given(monthly=money, months=st.integers(min_value=1, max_value=36), factor=factors, surcharge=money)
def test_windows_never_costs_less_than_linux(
    monthly: Decimal, months: int, factor: Decimal, surcharge: Decimal
) -> None:
    prices = term_prices(monthly, months, factor, surcharge)
    assert prices.windows is not None
    assert prices.windows >= prices.linux


@given(
    monthly=st.decimals(min_value=0, max_value=100_000, places=4),
    months=st.integers(min_value=1, max_value=36),
    factor=st.decimals(min_value=Decimal("0.0001"), max_value=2, places=4),
    surcharge=money,
    windows=st.booleans(),
)
def test_every_price_has_exactly_two_decimals(
    monthly: Decimal, months: int, factor: Decimal, surcharge: Decimal, windows: bool
) -> None:
    prices = term_prices(monthly, months, factor, surcharge if windows else None)
    amounts = [prices.monthly_linux, prices.linux] + ([prices.windows] if windows else [])
    assert [amount.as_tuple().exponent for amount in amounts if amount is not None] == [-2] * len(amounts)
    assert (prices.windows is None) is not windows


@given(tiers=tier_lists(), mbps=st.integers(min_value=0, max_value=400))
def test_bandwidth_cost_adds_up_tier_by_tier(tiers: list[list[str]], mbps: int) -> None:
    # the cost of b Mbps is the sum of each tier's price over the part of b inside that tier ...
    previous = 0
    expected = Decimal(0)
    for upto, price in tiers:
        top = mbps if upto == "*" else min(mbps, int(upto))
        expected += max(0, top - previous) * Decimal(price)
        previous = max(previous, top)
    assert bandwidth_cost(tiers, mbps) == expected
    # ... so one more Mbps costs exactly the price of the tier it falls in
    assert bandwidth_cost(tiers, mbps + 1) - bandwidth_cost(tiers, mbps) == _unit_price(tiers, mbps + 1)


@given(plan_monthly=money)
def test_a_virtual_host_costs_its_plan(plan_monthly: Decimal) -> None:
    assert virtual_host_monthly(plan_monthly) == plan_monthly


def test_example_pricing_is_read_from_the_fixture() -> None:
    # the pure rule on the fixture's pricing JSON gives the worked example's M
    numbers = {"cpu_cores": 1, "memory_gb": 1, "disk_gb": 10, "bandwidth_mbps": 10, "defense_gbps": 0}
    assert cloud_server_monthly(SH_BGP_PRICING, **numbers) == Decimal("83.66")
