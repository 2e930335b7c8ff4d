"""Shared helpers for API tests: catalog ids, configurations, batches and downloads made through the
API the way a client makes them, and row counts for "nothing was written" checks."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from models import AuditEntry, Card, CardBatch, CardBatchDownload
from services.runtime import Runtime
from tests.conftest import GraphQLClient, SignedInUser

FAR_FUTURE = "2099-12-31"

LINES = "query { regions { lines { id code } } }"
PRODUCT_MODELS = "query ($line: ID!) { productModels(lineId: $line) { id code } }"
HOSTING_PLANS = "query ($line: ID!) { hostingPlans(lineId: $line) { id code } }"
CREATE_BATCH = """
mutation ($input: CreateCardBatchInput!) {
  createCardBatch(input: $input) {
    __typename
    ... on CreateCardBatchSuccess {
      batch { id batchNo name productType quantity status validUntil referencePrice }
    }
    ... on Error { code message }
  }
}
"""
CREATE_DOWNLOAD = """
mutation ($batchId: ID!, $password: String!) {
  createCardBatchDownload(batchId: $batchId, password: $password) {
    __typename
    ... on CardBatchDownload { url expiresAt }
    ... on RateLimitedError { retryAfterSeconds }
    ... on Error { code message }
  }
}
"""


async def line_id(gql: GraphQLClient, user: SignedInUser, code: str) -> str:
    """The id of the line with catalog code `code`, as the API lists it."""
    result = await gql(LINES, user=user)
    found = [
        line["id"] for region in result["data"]["regions"] for line in region["lines"] if line["code"] == code
    ]
    assert len(found) == 1, result
    return found[0]


async def model_id(gql: GraphQLClient, user: SignedInUser, line: str, code: str) -> str:
    result = await gql(PRODUCT_MODELS, {"line": line}, user=user)
    [found] = [model["id"] for model in result["data"]["productModels"] if model["code"] == code]
    return found


async def plan_id(gql: GraphQLClient, user: SignedInUser, line: str, code: str) -> str:
    result = await gql(HOSTING_PLANS, {"line": line}, user=user)
    [found] = [plan["id"] for plan in result["data"]["hostingPlans"] if plan["code"] == code]
    return found


async def catalog_ids(gql: GraphQLClient, user: SignedInUser) -> dict[str, str]:
    """Ids of the example catalog's lines, bare-metal model and hosting plan, by catalog code."""
    sh_bgp = await line_id(gql, user, "sh-bgp")
    return {
        "sh-bgp": sh_bgp,
        "hk-cn2": await line_id(gql, user, "hk-cn2"),
        "bm-e5-2650": await model_id(gql, user, sh_bgp, "bm-e5-2650"),
        "vh-basic": await plan_id(gql, user, sh_bgp, "vh-basic"),
    }


def cloud_server_config(
    line: str,
    *,
    months: int = 1,
    cpu_cores: int = 1,
    memory_gb: int = 1,
    disk_gb: int = 10,
    bandwidth_mbps: int = 10,
    defense_gbps: int = 0,
) -> dict[str, Any]:
    """The catalog's first worked example (83.66 for one month on sh-bgp) unless told otherwise."""
    return {
        "productType": "CLOUD_SERVER",
        "lineId": line,
        "months": months,
        "cpuCores": cpu_cores,
        "memoryGb": memory_gb,
        "diskGb": disk_gb,
        "bandwidthMbps": bandwidth_mbps,
        "defenseGbps": defense_gbps,
    }


def bare_metal_config(
    line: str,
    model: str,
    *,
    months: int = 3,
    ip_count: int | None = 3,
    bandwidth_mbps: int = 10,
    defense_gbps: int = 10,
) -> dict[str, Any]:
    config = {
        "productType": "BARE_METAL",
        "lineId": line,
        "months": months,
        "productModelId": model,
        "bandwidthMbps": bandwidth_mbps,
        "defenseGbps": defense_gbps,
    }
    if ip_count is not None:
        config["ipCount"] = ip_count
    return config


def virtual_host_config(line: str, plan: str, *, months: int = 1) -> dict[str, Any]:
    return {"productType": "VIRTUAL_HOST", "lineId": line, "months": months, "planId": plan}


def batch_input(
    config: dict[str, Any],
    *,
    name: str = "测试提货卡",
    quantity: int = 1,
    valid_until: str = FAR_FUTURE,
    batch_no: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    wanted: dict[str, Any] = {
        "name": name,
        "config": config,
        "quantity": quantity,
        "validUntil": valid_until,
    }
    if batch_no is not None:
        wanted["batchNo"] = batch_no
    if status is not None:
        wanted["status"] = status
    return wanted


async def create_batch(
    gql: GraphQLClient,
    admin: SignedInUser,
    *,
    quantity: int = 1,
    config: dict[str, Any] | None = None,
    name: str = "测试提货卡",
    valid_until: str = FAR_FUTURE,
    batch_no: str | None = None,
    status: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A batch made through `createCardBatch` (a 1-month sh-bgp cloud server unless `config` says
    otherwise); `extra` adds input fields (`validFrom`, `perMemberLimit`). Fails the test if it is
    refused."""
    if config is None:
        config = cloud_server_config(await line_id(gql, admin, "sh-bgp"))
    wanted = batch_input(
        config, name=name, quantity=quantity, valid_until=valid_until, batch_no=batch_no, status=status
    )
    wanted.update(extra)
    result = await gql(CREATE_BATCH, {"input": wanted}, user=admin)
    created = result["data"]["createCardBatch"]
    assert created["__typename"] == "CreateCardBatchSuccess", result
    return created["batch"]


async def download_link(
    gql: GraphQLClient, admin: SignedInUser, batch_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """`createCardBatchDownload` with the admin's own password; the result union member as sent."""
    result = await gql(
        CREATE_DOWNLOAD, {"batchId": batch_id, "password": admin.password}, user=admin, headers=headers
    )
    return result["data"]["createCardBatchDownload"]


async def download_codes(
    gql: GraphQLClient, client: httpx.AsyncClient, admin: SignedInUser, batch_id: str
) -> list[str]:
    """Every code of the batch, dashed, in file order, from a fresh single-use link."""
    link = await download_link(gql, admin, batch_id)
    assert link["__typename"] == "CardBatchDownload", link
    response = await client.get(link["url"])
    assert response.status_code == 200, response.text
    return response.text.splitlines()


async def row_counts(rt: Runtime) -> dict[str, int]:
    """Rows in the tables a card-batch operation may write, for "nothing changed" checks."""
    counts = {}
    async with rt.db.read() as session:
        for model in (CardBatch, Card, AuditEntry, CardBatchDownload):
            counts[model.__tablename__] = await session.scalar(select(func.count()).select_from(model)) or 0
    return counts


async def audit_rows(rt: Runtime, action: str | None = None) -> list[AuditEntry]:
    """Audit entries, oldest first, optionally only those of one action."""
    statement = select(AuditEntry).order_by(AuditEntry.id)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    async with rt.db.read() as session:
        return list(await session.scalars(statement))


async def batch_row(rt: Runtime, batch_id: str | int) -> CardBatch:
    async with rt.db.read() as session:
        batch = await session.get(CardBatch, int(batch_id))
    assert batch is not None
    return batch


async def card_rows(rt: Runtime, batch_id: str | int) -> list[Card]:
    """The batch's cards as stored, in card order."""
    async with rt.db.read() as session:
        return list(
            await session.scalars(select(Card).where(Card.batch_id == int(batch_id)).order_by(Card.seq))
        )


async def snapshot(rt: Runtime, batch_id: str | int | None = None) -> dict[str, Any]:
    """Everything a refused card-batch operation must leave as it was: row counts and, for a batch,
    its status, counters and every card's status, remark and use."""
    state: dict[str, Any] = {"rows": await row_counts(rt)}
    if batch_id is not None:
        batch = await batch_row(rt, batch_id)
        state["batch"] = {
            "name": batch.name,
            "status": batch.status,
            "used_count": batch.used_count,
            "disabled_count": batch.disabled_count,
            "download_count": batch.download_count,
        }
        state["cards"] = [
            (card.id, card.status, card.remark, card.used_at, card.member_id)
            for card in await card_rows(rt, batch_id)
        ]
    return state
