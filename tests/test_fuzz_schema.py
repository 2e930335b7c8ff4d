"""Schema fuzzing (Schemathesis): every Query and Mutation field with generated arguments, signed in as
an admin and as a member, against a seeded database. No answer may be a server error: typed errors and
top-level INVALID_INPUT / FORBIDDEN / validation errors are answers; a masked INTERNAL_SERVER_ERROR is a bug.

TIHUO_FUZZ_EXAMPLES (default 150) sets the examples per role; CI keeps the default.
"""

from __future__ import annotations

import logging
import os
import string
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes

from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from tests.conftest import SignedInUser
from tests.factories import (
    bare_metal_config,
    catalog_ids,
    create_batch,
    download_codes,
    virtual_host_config,
)
from tests.provisioning_helpers import RecordingNotifier, with_settings

# read at import: the suite's autouse fixture removes TIHUO_* variables before each test runs
FUZZ_EXAMPLES = int(os.environ.get("TIHUO_FUZZ_EXAMPLES", "150"))
# bounded so that a generated createCardBatch that passes every check makes a few cards, not 100,000
FUZZ_MAX_BATCH_QUANTITY = 20

REDEEM = """
mutation ($input: RedeemCardInput!) { redeemCard(input: $input) {
  __typename ... on RedeemCardSuccess { order { id } } ... on Error { code } } }
"""
IMAGES = "query { regions { lines { code osImages { id name } } } }"


def _garbage(alphabet: str = string.printable) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, max_size=30)


# Date: real days (the boundaries included, where a day +1 or a zone shift overflows), impossible
# days, years past 9999 and plain garbage: the scalar's parser must turn every bad one into an error.
DATES = st.one_of(
    st.dates().map(date.isoformat),
    st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "10000-01-01",
            "2026-02-30",
            "2026-13-01",
            "2026-1-1",
            "20261231",
            "2026-12-31T00:00:00",
            "-2026-01-01",
            "",
        ]
    ),
    _garbage("0123456789-T:"),
)
OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=23, minutes=59))])
DATETIMES = st.one_of(
    st.datetimes(timezones=OFFSETS).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # no offset: refused
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "now"]),
    _garbage("0123456789-T:+Z."),
)
DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=2).map(str),
    st.sampled_from(["83.66", "0.001", "1e999999", "-0", "NaN", "sNaN", "Infinity", " 1.00", "1,00"]),
    _garbage("0123456789.-+eE"),
)
# IDs: mostly the small numbers the seed made, so generated queries reach real rows
IDS = st.one_of(
    st.integers(min_value=0, max_value=8).map(str).map(nodes.String),
    st.integers(min_value=-(2**63), max_value=2**63).map(nodes.Int),
    st.text(max_size=40).map(nodes.String),
)

# Int: mostly small, where page sizes, quantities, months and disk sizes are valid, so requests get
# past the range checks into the services; the whole 32-bit range still comes up
INTS = st.one_of(
    st.integers(min_value=0, max_value=100), st.integers(min_value=-(2**31), max_value=2**31 - 1)
)

schemathesis.graphql.scalar("Date", DATES.map(nodes.String))
schemathesis.graphql.scalar("DateTime", DATETIMES.map(nodes.String))
schemathesis.graphql.scalar("Decimal", DECIMALS.map(nodes.String))
schemathesis.graphql.scalar("ID", IDS)
schemathesis.graphql.scalar("Int", INTS.map(nodes.Int))


@pytest.fixture
def small_batches(rt):  # type: ignore[no-untyped-def]
    rt.settings = rt.settings.model_copy(update={"max_batch_quantity": FUZZ_MAX_BATCH_QUANTITY})


async def _provision_next(rt: Any, *, refuse: bool) -> None:
    runtime = with_settings(rt, simulated_failure="refuse") if refuse else rt
    job = await claim_job(runtime, "fuzz")
    assert job is not None
    await run_job(runtime, SimulatedProvisioner(runtime), RecordingNotifier(), job)


@pytest.fixture
async def seeded(rt, gql, client, admin, member, catalog, small_batches) -> None:  # type: ignore[no-untyped-def]
    """Three batches (cloud server, bare metal, virtual host: cards 1-6), one order ACTIVE (order 1)
    and one FAILED (order 2), one card disabled: ids 1..6 name real rows of most kinds."""
    ids = await catalog_ids(gql, admin)
    cloud = await create_batch(gql, admin, quantity=3)
    await create_batch(gql, admin, quantity=2, config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"]))
    host = await create_batch(
        gql, admin, quantity=1, config=virtual_host_config(ids["sh-bgp"], ids["vh-basic"])
    )
    images = await gql(IMAGES, user=member)
    [ubuntu] = [
        image["id"]
        for region in images["data"]["regions"]
        for line in region["lines"]
        for image in line["osImages"]
        if line["code"] == "sh-bgp" and image["name"] == "Ubuntu 22.04 x64"
    ]
    cloud_codes = await download_codes(gql, client, admin, cloud["id"])
    [host_code] = await download_codes(gql, client, admin, host["id"])
    for wanted in ({"code": cloud_codes[0], "osImageId": ubuntu}, {"code": host_code}):
        redeemed = await gql(REDEEM, {"input": wanted}, user=member)
        assert redeemed["data"]["redeemCard"]["__typename"] == "RedeemCardSuccess", redeemed
    await _provision_next(rt, refuse=False)
    await _provision_next(rt, refuse=True)
    disabled = await gql('mutation { setCardStatus(id: "3", status: DISABLED) { __typename } }', user=admin)
    assert disabled["data"]["setCardStatus"]["__typename"] == "SetCardStatusSuccess", disabled


@pytest.fixture
def api_schema(app: Any, seeded: None) -> Any:
    """The schema as the app tells it by introspection (a request that needs no sign-in and touches
    no table), for generating requests; they are sent to the app on the test's own event loop."""
    return schemathesis.graphql.from_asgi("/graphql", app)


def _internal_errors(payload: Any) -> list[dict[str, Any]]:
    errors = payload.get("errors") if isinstance(payload, dict) else None
    return [
        error
        for error in errors or []
        if (error.get("extensions") or {}).get("code") == "INTERNAL_SERVER_ERROR"
    ]


def _outcome(payload: Any) -> str:
    """What an answer was, in a word: the top-level error codes, or the result's __typename if asked."""
    if not isinstance(payload, dict):
        return "not an object"
    if payload.get("errors"):
        return ",".join(sorted({str((e.get("extensions") or {}).get("code")) for e in payload["errors"]}))
    value = next(iter((payload.get("data") or {}).values()), None)
    return value.get("__typename", "data") if isinstance(value, dict) else "data"


@pytest.mark.parametrize("role", ["admin", "member"])
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    # the database is made once per test, not per example: the fixtures are meant to be shared
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_no_generated_request_gets_a_server_error(
    role: str,
    data: st.DataObject,
    api_schema: Any,
    client: Any,
    admin: SignedInUser,
    member: SignedInUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = {"admin": admin, "member": member}[role]
    case = data.draw(api_schema.as_strategy(), label="case")
    caplog.clear()
    caplog.set_level(logging.ERROR, logger="tihuo.graphql")

    response = await client.post("/graphql", json={"query": case.body}, headers=user.headers)

    logged = caplog.text
    assert response.status_code in (200, 400), (
        f"HTTP {response.status_code} as {role} for\n{case.body}\n{response.text}\n{logged}"
    )
    payload = response.json()
    assert not _internal_errors(payload), (
        f"server error as {role} ({case.operation.label}) for\n{case.body}\n{payload}\n{logged}"
    )
    # `pytest --hypothesis-show-statistics` shows what the examples reached
    event(f"{case.operation.label}: {_outcome(payload)}")


# ---------------------------------------------------------------- what the fuzzing found

REDEMPTIONS_BETWEEN = (
    "query ($from: Date, $to: Date) { redemptions(filter: {from: $from, to: $to}) { totalCount } }"
)


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ('query { redemptions(filter: {from: "10000-01-01"}) { totalCount } }', {}),
        ('query { redemptions(filter: {to: "2026-02-30"}) { totalCount } }', {}),
        ("query { redemptions(filter: {to: 20261231}) { totalCount } }", {}),
        (REDEMPTIONS_BETWEEN, {"from": "10000-01-01"}),
        (REDEMPTIONS_BETWEEN, {"to": "garbage"}),
    ],
)
async def test_a_date_that_is_not_one_is_a_validation_error_not_a_server_error(gql, admin, query, variables):
    # given a Date written inline or sent as a variable that no day is
    # when it is sent
    result = await gql(query, variables, user=admin)

    # then the answer is GraphQL's validation error naming the type, not a masked bug
    [error] = result["errors"]
    assert result.get("data") is None
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert "Expected value of type 'Date'" in error["message"]


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"from": "0001-01-01"}, 2),
        ({"to": "9999-12-31"}, 2),
        ({"from": "0001-01-01", "to": "9999-12-31"}, 2),
        ({"from": "9999-12-31"}, 0),
        ({"to": "0001-01-01"}, 0),
    ],
)
async def test_the_calendars_first_and_last_days_bound_the_usage_log_like_any_other(
    gql, admin, seeded, bounds, expected
):
    # given two redemptions (the seed's), made today
    # when the log is filtered from the first day of the calendar or to its last
    result = await gql(REDEMPTIONS_BETWEEN, bounds, user=admin)

    # then the bound that has nothing beyond it keeps everything, the other keeps nothing
    assert result == {"data": {"redemptions": {"totalCount": expected}}}
