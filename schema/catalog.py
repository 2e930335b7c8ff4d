"""The catalog in the schema: regions, lines, images, bare-metal models, hosting plans,
configurations (as input and as a frozen copy) and quotes."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from models import HostingPlan, Line, OsImage, ProductModel, ProductType, Region
from schema.common import OsFamilyEnum, ProductTypeEnum
from schema.errors import InvalidInputErrorType, NotFoundErrorType, OutOfStockErrorType
from services.pricing import ConfigInput, PricedConfig


def _id(value: int | str) -> strawberry.ID:
    return strawberry.ID(str(value))


@strawberry.type(name="OsImage", description="An operating system image a member can pick when redeeming.")
class OsImageType:
    id: strawberry.ID = strawberry.field(description="Pass this as `osImageId` when redeeming.")
    code: str = strawberry.field(description="Stable key from the catalog file.")
    name: str = strawberry.field(description='Display name, e.g. "Ubuntu 22.04 x64".')
    family: OsFamilyEnum = strawberry.field(description="Linux or Windows.")

    @classmethod
    def of(cls, row: OsImage) -> OsImageType:
        return cls(id=_id(row.id), code=row.code, name=row.name, family=row.family)


@strawberry.type(
    name="Line", description="A network line in a region, with its own options, prices and images."
)
class LineType:
    id: strawberry.ID = strawberry.field(description="Pass this as `lineId` in a configuration.")
    code: str = strawberry.field(description="Stable key from the catalog file.")
    name: str = strawberry.field(description='Display name, e.g. "上海 BGP".')
    product_types: list[ProductTypeEnum] = strawberry.field(description="Products this line offers.")
    windows_monthly_surcharge: Decimal = strawberry.field(
        description="Extra monthly price of Windows on this line (cards are priced for Linux; R2)."
    )
    region_id: strawberry.Private[int]

    @classmethod
    def of(cls, row: Line) -> LineType:
        return cls(
            id=_id(row.id),
            code=row.code,
            name=row.name,
            product_types=[ProductType(value) for value in row.product_types],
            windows_monthly_surcharge=row.windows_monthly_surcharge,
            region_id=row.region_id,
        )

    @strawberry.field(description="The region the line is in.")
    async def region(self, info: Info) -> RegionType:
        row = await info.context.loaders.region.load(self.region_id)
        return RegionType.of(row)

    @strawberry.field(description="Images a member can pick on this line, Linux first.")
    async def os_images(self, info: Info) -> list[OsImageType]:
        rows = await info.context.loaders.os_images_by_line.load(int(self.id))
        return [OsImageType.of(row) for row in rows]


@strawberry.type(name="Region", description="A region (地域), e.g. 华东-上海.")
class RegionType:
    id: strawberry.ID = strawberry.field(description="The region's id.")
    code: str = strawberry.field(description="Stable key from the catalog file.")
    name: str = strawberry.field(description="Display name.")

    @classmethod
    def of(cls, row: Region) -> RegionType:
        return cls(id=_id(row.id), code=row.code, name=row.name)

    @strawberry.field(description="The region's lines, optionally only those offering one product type.")
    async def lines(
        self,
        info: Info,
        product_type: Annotated[
            ProductTypeEnum | None, strawberry.argument(description="Only lines offering this product.")
        ] = None,
    ) -> list[LineType]:
        rows = await info.context.loaders.lines_by_region.load((int(self.id), product_type))
        return [LineType.of(row) for row in rows]


@strawberry.type(name="ProductModel", description="A bare-metal server model with fixed hardware (产品型号).")
class ProductModelType:
    id: strawberry.ID = strawberry.field(description="Pass this as `productModelId`.")
    code: str = strawberry.field(description="Stable key from the catalog file.")
    name: str = strawberry.field(description="Display name.")
    cpu: str = strawberry.field(description='CPUs, e.g. "Intel E5-2650 v4 12核24线程 ×2".')
    memory: str = strawberry.field(description='Memory, e.g. "DDR4 64GB".')
    disks: str = strawberry.field(description='Disks, e.g. "SSD 480GB ×1, SATA 2TB ×1".')
    stock: int = strawberry.field(description="Servers left; 0 means batches and redemptions are refused.")

    @classmethod
    def of(cls, row: ProductModel) -> ProductModelType:
        return cls(
            id=_id(row.id),
            code=row.code,
            name=row.name,
            cpu=row.cpu,
            memory=row.memory,
            disks=row.disks,
            stock=row.stock,
        )


@strawberry.type(name="HostingPlan", description="A virtual-host plan.")
class HostingPlanType:
    id: strawberry.ID = strawberry.field(description="Pass this as `planId`.")
    code: str = strawberry.field(description="Stable key from the catalog file.")
    name: str = strawberry.field(description="Display name.")
    description: str = strawberry.field(description="What the plan includes.")

    @classmethod
    def of(cls, row: HostingPlan) -> HostingPlanType:
        return cls(id=_id(row.id), code=row.code, name=row.name, description=row.description)


@strawberry.input(
    name="ProductConfigInput",
    description="A product configuration to price or put on cards. Which fields apply depends on productType.",
)
class ProductConfigInput:
    product_type: ProductTypeEnum = strawberry.field(description="The product.")
    line_id: strawberry.ID = strawberry.field(description="The line (from `regions { lines { id } }`).")
    months: int = strawberry.field(description="Duration in months; one of the line's durations.")
    cpu_cores: int | None = strawberry.field(default=None, description="CLOUD_SERVER: CPU cores.")
    memory_gb: int | None = strawberry.field(default=None, description="CLOUD_SERVER: memory in GB.")
    disk_gb: int | None = strawberry.field(default=None, description="CLOUD_SERVER: disk in GB.")
    bandwidth_mbps: int | None = strawberry.field(
        default=None, description="CLOUD_SERVER, BARE_METAL: public bandwidth in Mbps."
    )
    defense_gbps: int | None = strawberry.field(
        default=None, description="CLOUD_SERVER, BARE_METAL: DDoS defense peak in Gbps."
    )
    ip_count: int | None = strawberry.field(
        default=None, description="BARE_METAL: IP addresses (default: the model's included IPs)."
    )
    product_model_id: strawberry.ID | None = strawberry.field(
        default=None, description="BARE_METAL: the model."
    )
    plan_id: strawberry.ID | None = strawberry.field(default=None, description="VIRTUAL_HOST: the plan.")

    def to_service(self) -> ConfigInput:
        return ConfigInput(
            product_type=ProductType(self.product_type),
            line_id=str(self.line_id),
            months=self.months,
            cpu_cores=self.cpu_cores,
            memory_gb=self.memory_gb,
            disk_gb=self.disk_gb,
            bandwidth_mbps=self.bandwidth_mbps,
            defense_gbps=self.defense_gbps,
            ip_count=self.ip_count,
            product_model_id=None if self.product_model_id is None else str(self.product_model_id),
            plan_id=None if self.plan_id is None else str(self.plan_id),
        )


@strawberry.type(
    name="ProductConfig",
    description="A frozen copy of a configuration, as it was priced when the batch was made.",
)
class ProductConfigType:
    product_type: ProductTypeEnum = strawberry.field(description="The product.")
    region_name: str = strawberry.field(description="Region, as named then.")
    line_name: str = strawberry.field(description="Line, as named then.")
    line_id: strawberry.ID = strawberry.field(description="The line's id.")
    months: int = strawberry.field(description="Duration in months.")
    cpu_cores: int | None = strawberry.field(description="CPU cores (cloud server).")
    memory_gb: int | None = strawberry.field(description="Memory in GB (cloud server).")
    disk_gb: int | None = strawberry.field(description="Disk in GB (cloud server).")
    bandwidth_mbps: int | None = strawberry.field(description="Bandwidth in Mbps.")
    defense_gbps: int | None = strawberry.field(description="DDoS defense peak in Gbps.")
    ip_count: int | None = strawberry.field(description="IP addresses (bare metal).")
    product_model_name: str | None = strawberry.field(description="Bare-metal model, as named then.")
    plan_name: str | None = strawberry.field(description="Hosting plan, as named then.")
    summary: str = strawberry.field(
        description='One line for people, e.g. "2 核 · 4 GB 内存 · 50 GB 磁盘 · 5 Mbps".'
    )

    @classmethod
    def of(cls, snapshot: dict[str, Any]) -> ProductConfigType:
        return cls(
            product_type=ProductType(snapshot["productType"]),
            region_name=snapshot["regionName"],
            line_name=snapshot["lineName"],
            line_id=_id(snapshot["lineId"]),
            months=snapshot["months"],
            cpu_cores=snapshot.get("cpuCores"),
            memory_gb=snapshot.get("memoryGb"),
            disk_gb=snapshot.get("diskGb"),
            bandwidth_mbps=snapshot.get("bandwidthMbps"),
            defense_gbps=snapshot.get("defenseGbps"),
            ip_count=snapshot.get("ipCount"),
            product_model_name=snapshot.get("productModelName"),
            plan_name=snapshot.get("planName"),
            summary=snapshot["summary"],
        )


@strawberry.type(name="Quote", description="The price of a configuration, Linux and Windows.")
class QuoteType:
    monthly_linux_price: Decimal = strawberry.field(
        description="One month, Linux, before duration discounts."
    )
    linux_price: Decimal = strawberry.field(
        description="The whole duration with Linux: a batch's reference price."
    )
    windows_price: Decimal | None = strawberry.field(
        description="The whole duration with Windows; null for a virtual host (no OS)."
    )
    months: int = strawberry.field(description="The duration priced.")

    @classmethod
    def of(cls, priced: PricedConfig) -> QuoteType:
        return cls(
            monthly_linux_price=priced.monthly_linux_price,
            linux_price=priced.linux_price,
            windows_price=priced.windows_price,
            months=priced.months,
        )


QuoteResult = Annotated[
    QuoteType | InvalidInputErrorType | NotFoundErrorType | OutOfStockErrorType,
    strawberry.union("QuoteResult", description="The quote, or why the configuration cannot be priced."),
]
