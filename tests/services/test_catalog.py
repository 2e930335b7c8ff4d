"""The catalog file: every problem reported with its place, loading as an idempotent upsert by code,
the bundled demo catalog, and the reads the GraphQL layer makes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select

from core.columns import Money
from core.db import Database
from models import HostingPlan, Line, OsImage, ProductModel, ProductType, Region, Role, line_os_images
from services.catalog import (
    browse_product_models,
    browse_regions,
    hosting_plans_for_line,
    lines_for_regions,
    list_regions,
    os_images_for_lines,
    product_models_for_line,
    regions_by_ids,
)
from services.catalog_file import CatalogError, parse_catalog
from services.catalog_loading import (
    KindReport,
    LoadReport,
    demo_catalog_text,
    load_catalog,
    load_catalog_text,
)
from services.errors import Unauthenticated
from services.pricing import ConfigInput, price_config
from services.runtime import Caller, Runtime, Viewer

EXAMPLE = (Path(__file__).parent.parent / "fixtures" / "catalog.toml").read_text(encoding="utf-8")
TABLES = [Region, OsImage, Line, ProductModel, HostingPlan]
Row = TypeVar("Row", Region, OsImage, Line, ProductModel, HostingPlan)


def _edit(text: str, *replacements: tuple[str, str]) -> str:
    """The text with each `old` (which must occur exactly once) replaced by `new`."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def _problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as raised:
        parse_catalog(text)
    return raised.value.problems


async def _contents(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every catalog row, column by column, in id order."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read() as session:
        for model in TABLES:
            rows = await session.execute(select(model.__table__).order_by(model.__table__.c.id))
            found[model.__tablename__] = [tuple(row) for row in rows]
        pairs = await session.execute(
            select(line_os_images).order_by(line_os_images.c.line_id, line_os_images.c.os_image_id)
        )
        found["line_os_images"] = [tuple(row) for row in pairs]
    return found


async def _counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        counts = {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model))
            for model in TABLES
        }
        counts["line_os_images"] = await session.scalar(select(func.count()).select_from(line_os_images))
    return {name: int(count or 0) for name, count in counts.items()}


async def _by_code(db: Database, model: type[Row], code: str) -> Row:
    async with db.read() as session:
        return (await session.scalars(select(model).where(model.code == code))).one()


async def _image_codes(db: Database, line_code: str) -> list[str]:
    line = await _by_code(db, Line, line_code)
    images = await os_images_for_lines(db, [line.id])
    return [image.code for image in images[line.id]]


# ---------------------------------------------------------------- parsing


def test_the_example_parses_into_canonical_data() -> None:
    # when the example file is parsed
    data = parse_catalog(EXAMPLE)

    # then every entry is there, and a line's JSON is what the pricing rules read
    assert [r.code for r in data.regions] == ["cn-east", "hk"]
    assert [i.code for i in data.os_images] == ["centos-7.9", "ubuntu-22.04", "win-2019"]
    assert [line.code for line in data.lines] == ["sh-bgp", "hk-cn2"]
    assert [m.code for m in data.product_models] == ["bm-e5-2650"]
    assert [p.code for p in data.hosting_plans] == ["vh-basic"]
    hk = data.lines[1]
    assert hk.product_types == (ProductType.CLOUD_SERVER,)
    assert hk.windows_monthly_surcharge == Decimal("30.00")
    assert hk.durations == {"1": "1", "12": "0.9"}
    assert hk.options == {
        "cpu_cores": [1, 2, 4],
        "memory_gb": [1, 2, 4, 8],
        "disk_gb": {"min": 20, "max": 200, "step": 10},
        "bandwidth_mbps": [1, 3, 5, 10],
        "defense_gbps": [0],
        "max_ips": 1,
    }
    assert hk.pricing == {
        "base": "20.00",
        "cpu_core": "35.00",
        "memory_gb": "18.00",
        "disk_gb": "1.00",
        "extra_ip": "0.00",
        "disk_free_gb": 20,
        "bandwidth_tiers": [["3", "25.00"], ["*", "40.00"]],
        "defense": {"0": "0.00"},
    }


def test_money_and_multipliers_are_stored_in_one_spelling() -> None:
    # given prices written with fewer decimals and a multiplier with trailing zeros
    text = _edit(EXAMPLE, ('base = "8.66"', 'base = "9"'), ('"12" = "0.9" }', '"12" = "0.90" }'))

    # when parsed, then money has 2 decimals and the multiplier its shortest form
    data = parse_catalog(text)
    assert data.lines[0].pricing["base"] == "9.00"
    assert data.lines[1].durations == {"1": "1", "12": "0.9"}


BROKEN = [
    pytest.param(
        [('region = "hk"', 'region = "xx"')],
        ['lines[1].region: unknown region "xx"'],
        id="unknown-region",
    ),
    pytest.param(
        [('defense = { "0" = "0.00" }', 'defense = { "0" = "0.00", "15" = "1.00" }')],
        ['lines[1].pricing.defense: "15" is not a listed peak'],
        id="price-for-unlisted-peak",
    ),
    pytest.param(
        [(', "50" = "700.00" }', " }")],
        ["lines[0].pricing.defense: no price for listed peak 50"],
        id="listed-peak-without-price",
    ),
    pytest.param(
        [('line = "sh-bgp"\nname = "E5', 'line = "zz"\nname = "E5')],
        ['product_models[0].line: unknown line "zz"'],
        id="model-on-unknown-line",
    ),
    pytest.param(
        [('code = "hk"', 'code = "cn-east"')],
        ['regions[1].code: duplicate "cn-east"', 'lines[1].region: unknown region "hk"'],
        id="duplicate-region",
    ),
    pytest.param(
        [('code = "hk-cn2"', 'code = "sh-bgp"')],
        ['lines[1].code: duplicate "sh-bgp"'],
        id="duplicate-line",
    ),
    pytest.param(
        [('base = "8.66"', 'base = "8.665"')],
        ['lines[0].pricing.base: "8.665" has more than 2 decimals'],
        id="three-decimals",
    ),
    pytest.param(
        [('monthly = "15.00"', 'monthly = "-15.00"')],
        ['hosting_plans[0].monthly: "-15.00" must not be negative'],
        id="negative-money",
    ),
    pytest.param(
        [('base = "20.00"', "base = 20.0")],
        ['lines[1].pricing.base: must be a decimal string such as "8.66", not 20.0'],
        id="money-as-float",
    ),
    pytest.param(
        [('windows_monthly_surcharge = "0.00"', 'windows_monthly_surcharge = "free"')],
        ['lines[0].windows_monthly_surcharge: "free" is not a decimal number'],
        id="money-not-a-number",
    ),
    pytest.param(
        [('family = "WINDOWS"', 'family = "MACOS"')],
        ['os_images[2].family: "MACOS" is not one of LINUX, WINDOWS'],
        id="unknown-family",
    ),
    pytest.param(
        [('product_types = ["CLOUD_SERVER"]', 'product_types = ["CLOUD_SERVER", "GPU"]')],
        [
            'lines[1].product_types[1]: unknown product type "GPU" (one of CLOUD_SERVER, VIRTUAL_HOST, BARE_METAL)'
        ],
        id="unknown-product-type",
    ),
    pytest.param(
        [('os_images = ["ubuntu-22.04", "win-2019"]', 'os_images = ["ubuntu-22.04", "win-2022"]')],
        ['lines[1].os_images[1]: unknown image "win-2022"'],
        id="unknown-image",
    ),
    pytest.param(
        [('os_images = ["ubuntu-22.04", "win-2019"]', "os_images = []")],
        ["lines[1].os_images: must list at least one image for CLOUD_SERVER or BARE_METAL"],
        id="no-images-for-a-server",
    ),
    pytest.param(
        [('durations = { "1" = "1", "12" = "0.9" }', 'durations = { "0" = "1", "12" = "-0.9" }')],
        [
            'lines[1].durations: "0" is not a positive whole number of months',
            'lines[1].durations.12: "-0.9" must be more than 0',
        ],
        id="bad-durations",
    ),
    pytest.param(
        [("cpu_cores = [1, 2, 4]\n", "cpu_cores = [1, 0, 4]\n")],
        ["lines[1].options.cpu_cores[1]: must be at least 1, not 0"],
        id="zero-cores",
    ),
    pytest.param(
        [("defense_gbps = [0]", "defense_gbps = [0, 0]")],
        ["lines[1].options.defense_gbps[1]: duplicate 0"],
        id="duplicate-option",
    ),
    pytest.param(
        [("disk_gb = { min = 20, max = 200, step = 10 }", "disk_gb = { min = 200, max = 20, step = 10 }")],
        ["lines[1].options.disk_gb: max 20 is less than min 200"],
        id="disk-max-below-min",
    ),
    pytest.param(
        [("disk_gb = { min = 20, max = 200, step = 10 }", "disk_gb = { min = 20, max = 205, step = 0 }")],
        ["lines[1].options.disk_gb.step: must be at least 1, not 0"],
        id="disk-zero-step",
    ),
    pytest.param(
        [("disk_gb = { min = 20, max = 200, step = 10 }", "disk_gb = { min = 20, max = 205, step = 10 }")],
        ["lines[1].options.disk_gb: max 205 is not min 20 plus a multiple of step 10"],
        id="disk-max-off-step",
    ),
    pytest.param(
        [('[["3", "25.00"], ["*", "40.00"]]', '[["3", "25.00"], ["2", "40.00"]]')],
        [
            "lines[1].pricing.bandwidth_tiers[1][0]: 2 must be more than the tier before (3)",
            'lines[1].pricing.bandwidth_tiers: the last tier must be ["*", price]',
        ],
        id="tiers-descending-without-star",
    ),
    pytest.param(
        [('[["5", "3.00"], ["*", "4.00"]]', '[["*", "3.00"], ["10", "4.00"]]')],
        [
            'lines[0].pricing.bandwidth_tiers[0]: "*" must be the last tier',
            'lines[0].pricing.bandwidth_tiers: the last tier must be ["*", price]',
        ],
        id="star-first",
    ),
    pytest.param(
        [('ip_pool = "203.0.113.0/25"', 'ip_pool = "203.0.113.0/33"')],
        [
            'lines[1].ip_pool: "203.0.113.0/33" is not a network: '
            "'203.0.113.0/33' does not appear to be an IPv4 or IPv6 network"
        ],
        id="bad-ip-pool",
    ),
    pytest.param(
        [('line = "sh-bgp"\nname = "E5', 'line = "hk-cn2"\nname = "E5')],
        ['product_models[0].line: line "hk-cn2" does not offer BARE_METAL'],
        id="model-on-line-without-bare-metal",
    ),
    pytest.param(
        [('line = "sh-bgp"\nname = "入门型', 'line = "hk-cn2"\nname = "入门型')],
        ['hosting_plans[0].line: line "hk-cn2" does not offer VIRTUAL_HOST'],
        id="plan-on-line-without-virtual-host",
    ),
    pytest.param(
        [("included_ips = 1", "included_ips = 0"), ("stock = 5", "stock = -1")],
        [
            "product_models[0].included_ips: must be at least 1, not 0",
            "product_models[0].stock: must be at least 0, not -1",
        ],
        id="model-counts",
    ),
    pytest.param(
        [("included_ips = 1", "included_ips = 9")],
        ['product_models[0].included_ips: 9 is more than line "sh-bgp" allows (max_ips 8)'],
        id="included-ips-above-max",
    ),
    pytest.param(
        [
            ('name = "华东-上海"\n', ""),
            ('code = "hk"\nname = "中国香港"', 'code = "hk"\nname = "中国香港"\nzone = 1'),
        ],
        ["regions[0].name: required", "regions[1].zone: unknown key"],
        id="missing-and-unknown-keys",
    ),
    pytest.param(
        [('currency = "CNY"', 'currency = "USD"')],
        ['currency: only "CNY" is supported, not "USD"'],
        id="other-currency",
    ),
    pytest.param(
        [("  max_ips = 1\n", "")],
        ["lines[1].options.max_ips: required"],
        id="missing-option",
    ),
    pytest.param(
        # a family that is not even a string was once a TypeError (a list is not hashable)
        [('family = "WINDOWS"', 'family = ["WINDOWS"]')],
        ["os_images[2].family: ['WINDOWS'] is not one of LINUX, WINDOWS"],
        id="family-as-array",
    ),
]


@pytest.mark.parametrize(("edits", "expected"), BROKEN)
def test_each_problem_is_reported_with_its_place(edits: list[tuple[str, str]], expected: list[str]) -> None:
    # given the example file with a fault put in
    text = _edit(EXAMPLE, *edits)

    # when it is parsed, then exactly the expected problems are listed
    assert _problems(text) == expected


def test_all_problems_are_collected_not_just_the_first() -> None:
    # given several faults far apart in the file
    text = _edit(
        EXAMPLE,
        (
            'family = "LINUX"\n\n[[os_images]]\ncode = "ubuntu',
            'family = "BSD"\n\n[[os_images]]\ncode = "ubuntu',
        ),
        ('region = "hk"', 'region = "xx"'),
        ('defense = { "0" = "0.00" }', 'defense = { "0" = "0.00", "15" = "1.00" }'),
        ('monthly = "899.00"', 'monthly = "899.001"'),
        ('monthly = "15.00"', "monthly = 15"),
    )

    # when it is parsed, then every one is listed, in file order
    assert _problems(text) == [
        'os_images[0].family: "BSD" is not one of LINUX, WINDOWS',
        'lines[1].region: unknown region "xx"',
        'lines[1].pricing.defense: "15" is not a listed peak',
        'product_models[0].monthly: "899.001" has more than 2 decimals',
        'hosting_plans[0].monthly: must be a decimal string such as "8.66", not 15',
    ]


def test_every_problem_of_one_entry_is_reported_together() -> None:
    # given one line with a wrong reference, broken options, broken prices and an unlisted peak
    text = _edit(
        EXAMPLE,
        ('region = "hk"', 'region = "xx"'),
        (
            'os_images = ["ubuntu-22.04", "win-2019"]',
            'os_images = ["ubuntu-22.04", "win-2022", "ubuntu-22.04"]',
        ),
        ("  max_ips = 1\n", ""),
        ('base = "20.00"', "base = 20.0"),
        ('[["3", "25.00"], ["*", "40.00"]]', '[["3", "25.00"], ["2", "forty"]]'),
        ('defense = { "0" = "0.00" }', 'defense = { "0" = "0.00", "15" = "1.00" }'),
    )

    # when it is parsed, then none of them waits for the others to be fixed
    assert _problems(text) == [
        'lines[1].region: unknown region "xx"',
        'lines[1].os_images[1]: unknown image "win-2022"',
        'lines[1].os_images[2]: duplicate "ubuntu-22.04"',
        "lines[1].options.max_ips: required",
        'lines[1].pricing.base: must be a decimal string such as "8.66", not 20.0',
        'lines[1].pricing.bandwidth_tiers[1][1]: "forty" is not a decimal number',
        "lines[1].pricing.bandwidth_tiers[1][0]: 2 must be more than the tier before (3)",
        'lines[1].pricing.bandwidth_tiers: the last tier must be ["*", price]',
        'lines[1].pricing.defense: "15" is not a listed peak',
    ]


def test_a_models_line_is_checked_even_when_the_model_has_other_problems() -> None:
    # given the bare-metal model moved to a line without bare metal, with a blank name and stock -1
    text = _edit(
        EXAMPLE,
        ('line = "sh-bgp"\nname = "E5-2650 v4 双路"', 'line = "hk-cn2"\nname = " "'),
        ("stock = 5", "stock = -1"),
    )

    # when it is parsed, then all three are listed
    assert _problems(text) == [
        'product_models[0].line: line "hk-cn2" does not offer BARE_METAL',
        "product_models[0].name: must not be blank",
        "product_models[0].stock: must be at least 0, not -1",
    ]


# texts of the file: the place, its key and value in the example, and the column it is stored in
TEXTS = [
    pytest.param("regions[1].name", 'name = "中国香港"', Region.__table__.c.name, id="region-name"),
    pytest.param("os_images[0].name", 'name = "CentOS 7.9 x64"', OsImage.__table__.c.name, id="image-name"),
    pytest.param("lines[1].code", 'code = "hk-cn2"', Line.__table__.c.code, id="line-code"),
    pytest.param("lines[1].name", 'name = "香港 CN2"', Line.__table__.c.name, id="line-name"),
    pytest.param(
        "product_models[0].code", 'code = "bm-e5-2650"', ProductModel.__table__.c.code, id="model-code"
    ),
    pytest.param(
        "product_models[0].cpu",
        'cpu = "Intel E5-2650 v4 12核24线程 ×2"',
        ProductModel.__table__.c.cpu,
        id="model-cpu",
    ),
    pytest.param(
        "product_models[0].memory", 'memory = "DDR4 64GB"', ProductModel.__table__.c.memory, id="model-memory"
    ),
    pytest.param(
        "product_models[0].disks",
        'disks = "SSD 480GB ×1, SATA 2TB ×1"',
        ProductModel.__table__.c.disks,
        id="model-disks",
    ),
    pytest.param("hosting_plans[0].code", 'code = "vh-basic"', HostingPlan.__table__.c.code, id="plan-code"),
    pytest.param(
        "hosting_plans[0].description",
        'description = "网页空间 2GB · 数据库 200MB · 月流量 50GB"',
        HostingPlan.__table__.c.description,
        id="plan-text",
    ),
]


@pytest.mark.parametrize(("place", "old", "column"), TEXTS)
async def test_a_text_may_be_as_long_as_its_column_and_no_longer(
    db: Database, place: str, old: str, column: Any
) -> None:
    # given the text made as long as its column, and one character longer
    width = column.type.length
    key = old.split(" = ")[0]
    longest = "字" * width
    fitting = _edit(EXAMPLE, (old, f'{key} = "{longest}"'))
    too_long = _edit(EXAMPLE, (old, f'{key} = "{longest}x"'))

    # when both are parsed, then the longest is refused by one character only
    assert _problems(too_long) == [f"{place}: longer than {width} characters"]
    await load_catalog(db, parse_catalog(fitting))

    # and the longest is stored whole (PostgreSQL would refuse it if it did not fit)
    async with db.read() as session:
        stored = await session.scalars(select(column).where(column == longest))
        assert list(stored) == [longest]


async def test_an_amount_may_be_as_large_as_a_money_column_holds(db: Database) -> None:
    # given the largest amount NUMERIC(precision, scale) holds, and the next one
    whole_digits = Money.impl.precision - Money.impl.scale
    largest = "9" * whole_digits + "." + "9" * Money.impl.scale
    next_one = "1" + "0" * whole_digits
    with_largest = _edit(EXAMPLE, ('monthly = "899.00"', f'monthly = "{largest}"'))
    with_next = _edit(EXAMPLE, ('monthly = "899.00"', f'monthly = "{next_one}"'))

    # when both are parsed, then the next one is too large
    assert _problems(with_next) == [f'product_models[0].monthly: "{next_one}" is too large']

    # and the largest is loaded and read back exactly
    await load_catalog(db, parse_catalog(with_largest))
    assert (await _by_code(db, ProductModel, "bm-e5-2650")).monthly == Decimal(largest)


def test_a_file_that_is_not_toml_is_one_problem() -> None:
    problems = _problems("currency = ")
    assert len(problems) == 1
    assert problems[0].startswith("file: not valid TOML: ")


def test_an_empty_file_names_the_required_arrays() -> None:
    assert _problems("") == [
        "currency: required",
        "regions: required",
        "os_images: required",
        "lines: required",
    ]


# ---------------------------------------------------------------- loading


async def test_loading_twice_changes_nothing(db: Database) -> None:
    # given the example loaded once
    first = await load_catalog(db, parse_catalog(EXAMPLE))
    before = await _contents(db)

    # when it is loaded again
    second = await load_catalog(db, parse_catalog(EXAMPLE))

    # then the first load inserted everything, the second touched nothing
    assert first == LoadReport(
        regions=KindReport(inserted=2),
        os_images=KindReport(inserted=3),
        lines=KindReport(inserted=2),
        product_models=KindReport(inserted=1),
        hosting_plans=KindReport(inserted=1),
    )
    assert second == LoadReport(
        regions=KindReport(unchanged=2),
        os_images=KindReport(unchanged=3),
        lines=KindReport(unchanged=2),
        product_models=KindReport(unchanged=1),
        hosting_plans=KindReport(unchanged=1),
    )
    assert not second.changed
    assert await _contents(db) == before
    assert len(before["line_os_images"]) == 5


async def test_a_changed_price_updates_the_row_in_place(db: Database) -> None:
    # given the example loaded
    await load_catalog(db, parse_catalog(EXAMPLE))
    line_before = await _by_code(db, Line, "sh-bgp")
    model_before = await _by_code(db, ProductModel, "bm-e5-2650")

    # when a price, a model's price and its stock change in the file
    changed = _edit(
        EXAMPLE,
        ('base = "8.66"', 'base = "9.00"'),
        ('monthly = "899.00"', 'monthly = "950.00"'),
        ("stock = 5", "stock = 2"),
    )
    report = await load_catalog(db, parse_catalog(changed))

    # then those rows are updated under the same ids and nothing else moves
    assert report.lines == KindReport(updated=1, unchanged=1)
    assert report.product_models == KindReport(updated=1)
    assert report.regions == KindReport(unchanged=2)
    line_after = await _by_code(db, Line, "sh-bgp")
    model_after = await _by_code(db, ProductModel, "bm-e5-2650")
    assert line_after.id == line_before.id
    assert line_after.pricing == {**line_before.pricing, "base": "9.00"}
    assert (model_after.id, model_after.monthly, model_after.stock) == (model_before.id, Decimal("950.00"), 2)


async def test_a_line_gets_exactly_the_listed_images(db: Database) -> None:
    # given the example loaded, hk-cn2 with Ubuntu and Windows
    await load_catalog(db, parse_catalog(EXAMPLE))
    assert await _image_codes(db, "hk-cn2") == ["ubuntu-22.04", "win-2019"]

    # when its list changes to CentOS and Ubuntu
    changed = _edit(
        EXAMPLE, ('os_images = ["ubuntu-22.04", "win-2019"]', 'os_images = ["centos-7.9", "ubuntu-22.04"]')
    )
    report = await load_catalog(db, parse_catalog(changed))

    # then the line has exactly those (counted as an update), and the other line is untouched
    assert report.lines == KindReport(updated=1, unchanged=1)
    assert await _image_codes(db, "hk-cn2") == ["centos-7.9", "ubuntu-22.04"]
    assert await _image_codes(db, "sh-bgp") == ["centos-7.9", "ubuntu-22.04", "win-2019"]


async def test_line_position_follows_the_file_order(db: Database) -> None:
    # given the example loaded, then the same file with its two lines swapped
    await load_catalog(db, parse_catalog(EXAMPLE))
    ids_before = {code: (await _by_code(db, Line, code)).id for code in ("sh-bgp", "hk-cn2")}
    data = parse_catalog(EXAMPLE)
    swapped = type(data)(
        currency=data.currency,
        regions=data.regions,
        os_images=data.os_images,
        lines=tuple(reversed(data.lines)),
        product_models=data.product_models,
        hosting_plans=data.hosting_plans,
    )

    # when it is loaded
    report = await load_catalog(db, swapped)

    # then both lines moved, kept their ids, and read back in the new order
    assert report.lines == KindReport(updated=2)
    lines = [await _by_code(db, Line, code) for code in ("hk-cn2", "sh-bgp")]
    assert [(line.id, line.position) for line in lines] == [
        (ids_before["hk-cn2"], 0),
        (ids_before["sh-bgp"], 1),
    ]


async def test_rows_missing_from_the_file_are_kept(db: Database) -> None:
    # given the example loaded
    await load_catalog(db, parse_catalog(EXAMPLE))
    plan = await _by_code(db, HostingPlan, "vh-basic")

    # when a file without the hosting plan is loaded
    without_plan = EXAMPLE[: EXAMPLE.index("[[hosting_plans]]")]
    report = await load_catalog(db, parse_catalog(without_plan))

    # then the plan is still there, unchanged (batches may refer to it)
    assert report.hosting_plans == KindReport()
    kept = await _by_code(db, HostingPlan, "vh-basic")
    assert (kept.id, kept.line_id, kept.name, kept.monthly) == (
        plan.id,
        plan.line_id,
        plan.name,
        plan.monthly,
    )


async def test_an_invalid_file_writes_nothing(db: Database) -> None:
    # given the example loaded
    await load_catalog(db, parse_catalog(EXAMPLE))
    counts = await _counts(db)
    contents = await _contents(db)

    # when a file with a new region, a new price and one fault is loaded
    broken = _edit(
        EXAMPLE,
        (
            '[[regions]]\ncode = "hk"',
            '[[regions]]\ncode = "cn-north"\nname = "华北-北京"\n\n[[regions]]\ncode = "hk"',
        ),
        ('base = "8.66"', 'base = "9.00"'),
        ('region = "hk"', 'region = "xx"'),
    )
    with pytest.raises(CatalogError) as raised:
        await load_catalog_text(db, broken)

    # then the fault is named and not one row was added or changed
    assert raised.value.problems == ['lines[1].region: unknown region "xx"']
    assert await _counts(db) == counts
    assert await _contents(db) == contents


async def test_the_demo_catalog_parses_and_loads(db: Database) -> None:
    # when the bundled demo catalog is parsed and loaded
    data = parse_catalog(demo_catalog_text())
    report = await load_catalog(db, data)

    # then everything is inserted, including a sold-out model for demonstrating OUT_OF_STOCK
    assert report == LoadReport(
        regions=KindReport(inserted=4),
        os_images=KindReport(inserted=7),
        lines=KindReport(inserted=5),
        product_models=KindReport(inserted=3),
        hosting_plans=KindReport(inserted=3),
    )
    assert [m.stock for m in data.product_models if m.stock == 0] == [0]
    assert {r.name for r in data.regions} == {"华东-上海", "华北-北京", "华南-广州", "中国香港"}


def test_the_demo_catalog_keeps_the_example_lines_model_and_plan() -> None:
    # given both files parsed
    example = parse_catalog(EXAMPLE)
    demo = parse_catalog(demo_catalog_text())

    # then the example's lines, model and plan are in the demo unchanged, so worked examples agree
    demo_lines = {line.code: line for line in demo.lines}
    assert [demo_lines[line.code] for line in example.lines] == list(example.lines)
    assert [m for m in demo.product_models if m.code == "bm-e5-2650"] == list(example.product_models)
    assert [p for p in demo.hosting_plans if p.code == "vh-basic"] == list(example.hosting_plans)


async def test_the_worked_examples_price_the_same_on_the_demo_catalog(db: Database) -> None:
    # given the demo catalog loaded
    await load_catalog(db, parse_catalog(demo_catalog_text()))
    sh = await _by_code(db, Line, "sh-bgp")
    hk = await _by_code(db, Line, "hk-cn2")
    cloud = ConfigInput(ProductType.CLOUD_SERVER, str(sh.id), 12, 1, 1, 10, 10, 0)
    overseas = ConfigInput(ProductType.CLOUD_SERVER, str(hk.id), 1, 2, 2, 40, 5, 0)

    # when the examples are priced, then as in the format description
    async with db.read() as session:
        first = await price_config(session, cloud)
        second = await price_config(session, overseas)
    assert first.linux_price == Decimal("853.33")
    assert (second.linux_price, second.windows_price) == (Decimal("301.00"), Decimal("331.00"))


# ---------------------------------------------------------------- reads


async def test_regions_can_be_narrowed_to_a_product_type(db: Database) -> None:
    # given the example: cn-east offers everything, hk cloud servers only
    await load_catalog(db, parse_catalog(EXAMPLE))

    # when regions are listed per product type, then only regions with such a line, by id
    assert [r.code for r in await list_regions(db)] == ["cn-east", "hk"]
    assert [r.code for r in await list_regions(db, ProductType.CLOUD_SERVER)] == ["cn-east", "hk"]
    assert [r.code for r in await list_regions(db, ProductType.BARE_METAL)] == ["cn-east"]
    assert [r.code for r in await list_regions(db, ProductType.VIRTUAL_HOST)] == ["cn-east"]


async def test_lines_images_and_regions_by_id(db: Database) -> None:
    # given the demo catalog (two lines in hk, several images per line)
    await load_catalog(db, parse_catalog(demo_catalog_text()))
    hk = await _by_code(db, Region, "hk")
    east = await _by_code(db, Region, "cn-east")

    # when the loaders' reads run
    lines = await lines_for_regions(db, [hk.id, east.id, 999], None)
    bare_metal = await lines_for_regions(db, [hk.id], ProductType.BARE_METAL)
    hk_bgp = lines[hk.id][1]
    images = await os_images_for_lines(db, [hk_bgp.id, 999])
    regions = await regions_by_ids(db, [east.id, hk.id, 999])

    # then each key is answered, in file order for lines and Linux-first by name for images
    assert {key: [line.code for line in value] for key, value in lines.items()} == {
        hk.id: ["hk-cn2", "hk-bgp"],
        east.id: ["sh-bgp"],
        999: [],
    }
    assert [line.code for line in bare_metal[hk.id]] == ["hk-bgp"]
    assert [image.name for image in images[hk_bgp.id]] == [
        "CentOS 7.9 x64",
        "Debian 12 x64",
        "Ubuntu 22.04 x64",
        "Windows Server 2019 x64",
        "Windows Server 2022 x64",
    ]
    assert images[999] == []
    assert {key: region.code for key, region in regions.items()} == {east.id: "cn-east", hk.id: "hk"}


async def test_models_and_plans_of_a_line(db: Database) -> None:
    await load_catalog(db, parse_catalog(demo_catalog_text()))
    sh = await _by_code(db, Line, "sh-bgp")
    hk = await _by_code(db, Line, "hk-cn2")
    assert [m.code for m in await product_models_for_line(db, sh.id)] == ["bm-e5-2650"]
    assert [p.code for p in await hosting_plans_for_line(db, sh.id)] == ["vh-basic", "vh-standard"]
    assert await product_models_for_line(db, hk.id) == []
    assert await hosting_plans_for_line(db, hk.id) == []


async def test_browsing_needs_a_signed_in_caller(rt: Runtime) -> None:
    # given the example loaded
    await load_catalog(rt.db, parse_catalog(EXAMPLE))
    member = Caller(viewer=Viewer(id=1, username="member", role=Role.MEMBER))
    line = await _by_code(rt.db, Line, "sh-bgp")

    # when a member browses, then the catalog comes back; an id that is no number names no line
    assert [r.code for r in await browse_regions(rt, member, ProductType.BARE_METAL)] == ["cn-east"]
    assert [m.code for m in await browse_product_models(rt, member, str(line.id))] == ["bm-e5-2650"]
    assert await browse_product_models(rt, member, "abc") == []

    # and nobody signed in is refused
    with pytest.raises(Unauthenticated):
        await browse_regions(rt, Caller())
