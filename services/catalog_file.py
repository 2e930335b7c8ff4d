"""The catalog file's format (shown by example in tests/fixtures/catalog.toml) as pydantic models, and
`parse_catalog`, which checks a whole file and names every problem by its place ("lines[1].region").
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from models.base import OsFamily, ProductType
from models.catalog import HostingPlan, Line, OsImage, ProductModel, Region
from services.catalog_values import (
    Amount,
    NotNegative,
    NotNegativeNumbers,
    Positive,
    PositiveNumbers,
    array_of_tables,
    defense_prices,
    distinct,
    fits,
    month_factors,
    network,
    os_family,
    problem,
    product_type,
    quote,
    supported_currency,
    tiers,
)


class CatalogError(Exception):
    """The catalog file is not acceptable; `problems` lists every fault as "place: message"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_catalog(text: str) -> CatalogData:
    """Read a catalog file and check all of it; raises CatalogError listing every problem found."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError([f"file: not valid TOML: {exc}"]) from None
    try:
        catalog = CatalogFile.model_validate(document, context=_Seen())
    except ValidationError as exc:
        raise CatalogError([_problem_text(error) for error in exc.errors(include_url=False)]) from None
    return catalog.data()


# ---------------------------------------------------------------- problems

# pydantic's own errors, in the words of the format; every other message is one of ours
_WORDS = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
}


def _problem_text(error: ErrorDetails) -> str:
    place = ""
    for part in error["loc"]:
        place += f"[{part}]" if isinstance(part, int) else f".{part}" if place else part
    return f"{place or 'file'}: {_WORDS.get(error['type'], error['msg'])}"


# ---------------------------------------------------------------- what the file has met so far


@dataclass
class _Seen:
    """The validation context. Pydantic validates fields in the order a model declares them, so the
    codes of every region and image are known before the lines refer to them, and the lines (their
    codes, and those entirely valid) before the models and plans. A code counts even when the rest of
    its entry is broken, so a reference to it is not reported a second time.

    Cross-references are checked by validators of the referring field reading this, rather than by
    `model_validator(mode="after")`: pydantic runs those only once every field of the model is valid,
    which would hide a wrong reference behind any other problem of its entry."""

    codes: defaultdict[type[_Entry], set[str]] = field(default_factory=lambda: defaultdict(set))
    lines: dict[str, LineEntry] = field(default_factory=dict)
    # the defense peaks of the line being read (its options come before its pricing), so its defense
    # prices are checked against them even when the rest of its options or pricing is broken
    peaks: list[int] | None = None


def _seen(info: ValidationInfo) -> _Seen:
    if not isinstance(info.context, _Seen):
        raise TypeError("catalog entries are checked by parse_catalog, which gives them their context")
    return info.context


def _known(kind: type[_Entry], what: str, code: str, info: ValidationInfo) -> str:
    if code not in _seen(info).codes[kind]:
        raise problem(f"unknown {what} {quote(code)}")
    return code


def _refers_to(kind: type[_Entry], what: str) -> AfterValidator:
    return AfterValidator(lambda code, info: _known(kind, what, code, info))


def _offering(kind: ProductType) -> AfterValidator:
    def offers(code: str, info: ValidationInfo) -> str:
        line = _seen(info).lines.get(code)
        if line is not None and kind not in line.product_types:
            raise problem(f"line {quote(code)} does not offer {kind.value}")
        return code

    return AfterValidator(offers)


def _defense_prices(value: Any, info: ValidationInfo) -> dict[int, Decimal]:
    return defense_prices(value, _seen(info).peaks)


_REGIONS = Region.__table__.c
_OS_IMAGES = OsImage.__table__.c
_LINES = Line.__table__.c
_PRODUCT_MODELS = ProductModel.__table__.c
_HOSTING_PLANS = HostingPlan.__table__.c


# ---------------------------------------------------------------- the file's tables


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Entry(_Table):
    """An entry of one of the file's arrays ([[regions]], [[lines]], ...), known by its code."""

    code: str

    @field_validator("code")
    @classmethod
    def _first_of_its_code(cls, code: str, info: ValidationInfo) -> str:
        codes = _seen(info).codes[cls]
        if code in codes:
            raise problem(f"duplicate {quote(code)}")
        codes.add(code)
        return code


class RegionEntry(_Entry):
    code: Annotated[str, fits(_REGIONS.code)]
    name: Annotated[str, fits(_REGIONS.name)]


class OsImageEntry(_Entry):
    code: Annotated[str, fits(_OS_IMAGES.code)]
    name: Annotated[str, fits(_OS_IMAGES.name)]
    family: Annotated[OsFamily, PlainValidator(os_family)]


class DiskRange(_Table):
    min: Positive
    max: Positive
    step: Positive

    @model_validator(mode="after")
    def _whole_steps(self) -> Self:
        if self.max < self.min:
            raise problem(f"max {self.max} is less than min {self.min}")
        if (self.max - self.min) % self.step:
            raise problem(f"max {self.max} is not min {self.min} plus a multiple of step {self.step}")
        return self


class LineOptions(_Table):
    """What a cloud server on the line may have; bandwidth and defense are also bare metal's choices."""

    cpu_cores: PositiveNumbers
    memory_gb: PositiveNumbers
    disk_gb: DiskRange
    bandwidth_mbps: PositiveNumbers
    defense_gbps: NotNegativeNumbers
    max_ips: Positive

    @field_validator("defense_gbps")
    @classmethod
    def _peaks_to_price(cls, peaks: list[int], info: ValidationInfo) -> list[int]:
        _seen(info).peaks = peaks
        return peaks


class LinePricing(_Table):
    base: Amount
    cpu_core: Amount
    memory_gb: Amount
    disk_gb: Amount
    extra_ip: Amount
    disk_free_gb: NotNegative
    bandwidth_tiers: Annotated[list[tuple[str, Decimal]], PlainValidator(tiers)]
    # peak -> price, one for each peak of options.defense_gbps (see _Seen.peaks)
    defense: Annotated[dict[int, Decimal], PlainValidator(_defense_prices)]


_STRINGS = "must be an array of strings"


class LineEntry(_Entry):
    code: Annotated[str, fits(_LINES.code)]
    region: Annotated[str, fits(_REGIONS.code), _refers_to(RegionEntry, "region")]
    name: Annotated[str, fits(_LINES.name)]
    product_types: Annotated[
        tuple[ProductType, ...],
        distinct(
            lambda value, _: product_type(value),
            _STRINGS,
            empty="must list at least one product type",
            strings=True,
        ),
    ]
    os_images: Annotated[
        tuple[str, ...],
        distinct(lambda code, info: _known(OsImageEntry, "image", code, info), _STRINGS, strings=True),
    ]
    ip_pool: Annotated[str, fits(_LINES.ip_pool), AfterValidator(network)]
    windows_monthly_surcharge: Amount
    # months -> multiplier, as stored: {"1": "1", "12": "0.85"}
    durations: Annotated[dict[str, str], PlainValidator(month_factors)]
    options: LineOptions
    pricing: LinePricing

    @model_validator(mode="before")
    @classmethod
    def _peaks_not_yet_known(cls, data: Any, info: ValidationInfo) -> Any:
        _seen(info).peaks = None
        return data

    @field_validator("os_images")
    @classmethod
    def _an_image_for_servers(cls, images: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # cloud servers and bare metal need an OS at redemption (OS_REQUIRED): with none listed,
        # every card on the line could never be redeemed (read once product_types is valid)
        types = set(info.data.get("product_types", ()))
        if not images and types & {ProductType.CLOUD_SERVER, ProductType.BARE_METAL}:
            raise problem("must list at least one image for CLOUD_SERVER or BARE_METAL")
        return images

    @model_validator(mode="after")
    def _known_valid(self, info: ValidationInfo) -> Self:
        # the models and plans on this line are checked against it (of a duplicate code, the first)
        _seen(info).lines.setdefault(self.code, self)
        return self

    def data(self) -> LineData:
        pricing = self.pricing
        return LineData(
            code=self.code,
            region=self.region,
            name=self.name,
            product_types=self.product_types,
            os_images=self.os_images,
            ip_pool=self.ip_pool,
            windows_monthly_surcharge=self.windows_monthly_surcharge,
            durations=dict(self.durations),
            options=self.options.model_dump(),
            pricing={
                "base": str(pricing.base),
                "cpu_core": str(pricing.cpu_core),
                "memory_gb": str(pricing.memory_gb),
                "disk_gb": str(pricing.disk_gb),
                "extra_ip": str(pricing.extra_ip),
                "disk_free_gb": pricing.disk_free_gb,
                "bandwidth_tiers": [[upto, str(price)] for upto, price in pricing.bandwidth_tiers],
                "defense": {str(peak): str(price) for peak, price in pricing.defense.items()},
            },
        )


class ProductModelEntry(_Entry):
    """A bare-metal model; its line must offer BARE_METAL."""

    code: Annotated[str, fits(_PRODUCT_MODELS.code)]
    line: Annotated[str, fits(_LINES.code), _refers_to(LineEntry, "line"), _offering(ProductType.BARE_METAL)]
    name: Annotated[str, fits(_PRODUCT_MODELS.name)]
    cpu: Annotated[str, fits(_PRODUCT_MODELS.cpu)]
    memory: Annotated[str, fits(_PRODUCT_MODELS.memory)]
    disks: Annotated[str, fits(_PRODUCT_MODELS.disks)]
    monthly: Amount
    included_ips: Positive
    stock: NotNegative

    @field_validator("included_ips")
    @classmethod
    def _within_the_lines_ips(cls, included: int, info: ValidationInfo) -> int:
        code = info.data.get("line")
        line = _seen(info).lines.get(code) if code else None
        if line is not None and included > line.options.max_ips:
            raise problem(
                f"{included} is more than line {quote(code)} allows (max_ips {line.options.max_ips})"
            )
        return included


class HostingPlanEntry(_Entry):
    """A virtual-host plan; its line must offer VIRTUAL_HOST."""

    code: Annotated[str, fits(_HOSTING_PLANS.code)]
    line: Annotated[
        str, fits(_LINES.code), _refers_to(LineEntry, "line"), _offering(ProductType.VIRTUAL_HOST)
    ]
    name: Annotated[str, fits(_HOSTING_PLANS.name)]
    description: Annotated[str, fits(_HOSTING_PLANS.description)]
    monthly: Amount


_ENTRIES = BeforeValidator(array_of_tables)


class CatalogFile(_Table):
    """The whole file. Its arrays are declared in the order they refer to each other (see _Seen)."""

    currency: Annotated[str, PlainValidator(supported_currency)]
    regions: Annotated[tuple[RegionEntry, ...], _ENTRIES]
    os_images: Annotated[tuple[OsImageEntry, ...], _ENTRIES]
    lines: Annotated[tuple[LineEntry, ...], _ENTRIES]
    product_models: Annotated[tuple[ProductModelEntry, ...], _ENTRIES] = ()
    hosting_plans: Annotated[tuple[HostingPlanEntry, ...], _ENTRIES] = ()

    def data(self) -> CatalogData:
        return CatalogData(
            currency=self.currency,
            regions=self.regions,
            os_images=self.os_images,
            lines=tuple(line.data() for line in self.lines),
            product_models=self.product_models,
            hosting_plans=self.hosting_plans,
        )


# ---------------------------------------------------------------- the checked file, as it is loaded


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
class CatalogData:
    currency: str
    regions: tuple[RegionEntry, ...]
    os_images: tuple[OsImageEntry, ...]
    lines: tuple[LineData, ...]
    product_models: tuple[ProductModelEntry, ...]
    hosting_plans: tuple[HostingPlanEntry, ...]
