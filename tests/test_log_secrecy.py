"""No secret in any log line: a whole run (sign-ins, a batch and its download, a remark, a preview, a
redemption, a wrong password, provisioning) logged at DEBUG by every logger, then every line searched
for the codes, passwords and tokens it handled. Again with the app's own logging set-up at its
default level, where no statement, hash, phone number or remark may appear at all. Every line is
one JSON object carrying its request id."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from models import Role
from services.notifiers import LogNotifier
from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from tests.conftest import SignedInUser, make_user
from tests.factories import create_batch, download_link
from tihuo.observability import JsonFormatter, configure_logging

pytestmark = pytest.mark.usefixtures("catalog")

ADMIN_PASSWORD = "Admin-Secret-Pass-4711"
MEMBER_PASSWORD = "member secret pass 0815"
WRONG_PASSWORD = "Wrong-Guess-Pass-9999"
DOWNLOAD_REQUEST_ID = "download-request-0001"
REDEEM_REQUEST_ID = "redeem-request-0001"
# the test's own HTTP client logs each URL it fetches (a download URL holds its token); the app under
# test makes no outbound HTTP request in this run, so these lines are not the app's
CLIENT_LOGGERS = ("httpx", "httpcore")

LOGIN = """
mutation Login($username: String!, $password: String!) {
  login(input: {username: $username, password: $password}) {
    __typename ... on LoginSuccess { token } ... on Error { code } } }
"""
IMAGES = "query { regions { lines { code osImages { id name } } } }"
PREVIEW = """
query ($code: String!) { redemptionPreview(code: $code) {
  __typename ... on RedemptionPreview { productName } ... on Error { code } } }
"""
REDEEM = """
mutation ($input: RedeemCardInput!) { redeemCard(input: $input) {
  __typename ... on RedeemCardSuccess { order { orderNo status } } ... on Error { code } } }
"""
CARD_IDS = "query ($id: ID!) { cardBatch(id: $id) { cards { nodes { id } } } }"
SET_REMARK = """
mutation ($id: ID!, $remark: String!) { setCardRemark(id: $id, remark: $remark) { __typename } }
"""
MEMBER_PHONE = "13912345678"
REMARK = "given to reseller Zhang at the Guangzhou fair"
# what a logged statement looks like, in either dialect's parameter style
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|BEGIN|COMMIT)\b|\$argon2|\[generated in ")


class Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.addFilter(lambda record: not record.name.startswith(CLIENT_LOGGERS))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Formatted lines of every logger at DEBUG, for the length of the test."""
    handler = Collecting()
    root = logging.getLogger()
    saved_root = root.level
    saved: dict[logging.Logger, tuple[int, bool]] = {}
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            saved[logger] = (logger.level, logger.disabled)
            if logger.level:
                logger.setLevel(logging.DEBUG)
            logger.disabled = False
            if not logger.propagate:
                logger.addHandler(handler)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for logger, (level, disabled) in saved.items():
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(handler)


async def sign_in(gql: Any, user: SignedInUser, password: str) -> SignedInUser:
    result = await gql(LOGIN, {"username": user.viewer.username, "password": password})
    login = result["data"]["login"]
    assert login["__typename"] == "LoginSuccess", result
    return SignedInUser(viewer=user.viewer, password=password, token=login["token"])


def code_forms(code: str) -> set[str]:
    undashed = code.replace("-", "")
    return {code, undashed, code.lower(), undashed.lower()}


@dataclass
class Run:
    """What a whole run handled: the secrets no line may hold, and what it did."""

    secrets: set[str]
    order_no: str
    metrics_page: str


async def run_everything(gql: Any, client: Any, rt: Any) -> Run:
    # given an admin and a member with known passwords
    admin_user = await make_user(rt, "ops-admin", Role.ADMIN, password=ADMIN_PASSWORD)
    member_user = await make_user(rt, "alice", Role.MEMBER, password=MEMBER_PASSWORD, phone=MEMBER_PHONE)

    # when the admin signs in, makes a batch, writes a remark and downloads its codes
    admin = await sign_in(gql, admin_user, ADMIN_PASSWORD)
    batch = await create_batch(gql, admin, quantity=3)
    cards = await gql(CARD_IDS, {"id": batch["id"]}, user=admin)
    remarked = await gql(
        SET_REMARK,
        {"id": cards["data"]["cardBatch"]["cards"]["nodes"][1]["id"], "remark": REMARK},
        user=admin,
    )
    assert remarked["data"]["setCardRemark"]["__typename"] == "SetCardRemarkSuccess", remarked
    link = await download_link(gql, admin, batch["id"])
    assert link["__typename"] == "CardBatchDownload", link
    download_token = link["url"].rsplit("/", 1)[-1]
    response = await client.get(link["url"], headers={"X-Request-ID": DOWNLOAD_REQUEST_ID})
    assert response.status_code == 200, response.text
    codes = response.text.splitlines()
    assert len(codes) == 3

    # and the member signs in (once wrongly), previews a card and redeems it with an OS
    wrong = await gql(LOGIN, {"username": "alice", "password": WRONG_PASSWORD})
    assert wrong["data"]["login"] == {"__typename": "WrongPasswordError", "code": "WRONG_PASSWORD"}
    member = await sign_in(gql, member_user, MEMBER_PASSWORD)
    images = await gql(IMAGES, user=member)
    [ubuntu] = [
        image["id"]
        for region in images["data"]["regions"]
        for line in region["lines"]
        if line["code"] == "sh-bgp"
        for image in line["osImages"]
        if image["name"] == "Ubuntu 22.04 x64"
    ]
    preview = await gql(PREVIEW, {"code": codes[0]}, user=member)
    assert preview["data"]["redemptionPreview"]["__typename"] == "RedemptionPreview", preview
    typed = codes[0].replace("-", "").lower()
    redeemed = await gql(
        REDEEM,
        {"input": {"code": typed, "osImageId": ubuntu}},
        user=member,
        headers={"X-Request-ID": REDEEM_REQUEST_ID},
    )
    order = redeemed["data"]["redeemCard"]["order"]

    # and the worker opens the server and sends the SMS (through the log notifier)
    job = await claim_job(rt, "w1")
    assert job is not None and job.order_no == order["orderNo"]
    instance_password = rt.password_keys.open(job.sealed, job.order_no)
    await run_job(rt, SimulatedProvisioner(rt), LogNotifier(), job)
    metrics_page = (await client.get("/metrics")).text
    secrets = {
        *(form for code in codes for form in code_forms(code)),
        ADMIN_PASSWORD,
        MEMBER_PASSWORD,
        WRONG_PASSWORD,
        admin.token,
        member.token,
        admin_user.token,
        member_user.token,
        download_token,
        instance_password,
    }
    return Run(secrets=secrets, order_no=order["orderNo"], metrics_page=metrics_page)


def leaks(lines: list[str], secrets: set[str]) -> list[tuple[list[str], str]]:
    found = []
    for line in lines:
        decoded = " ".join(str(value) for value in json.loads(line).values())
        leaked = [secret for secret in secrets if secret in line or secret in decoded]
        if leaked:
            found.append((leaked, line))
    return found


async def test_a_full_run_logs_no_code_password_or_token(gql, client, rt, log_lines):
    run = await run_everything(gql, client, rt)

    # then every line is one JSON object with a request id field
    assert log_lines
    entries = [json.loads(line) for line in log_lines]
    assert all(isinstance(entry, dict) and "request_id" in entry for entry in entries)
    # and the lines written for a request carry its id
    assert any(
        entry["request_id"] == DOWNLOAD_REQUEST_ID and entry.get("event") == "download" for entry in entries
    )
    assert any(
        entry["request_id"] == REDEEM_REQUEST_ID
        and entry.get("event") == "redeem"
        and entry.get("order_no") == run.order_no
        for entry in entries
    )
    assert any(entry.get("event") == "notify.sms" for entry in entries)
    # and no line holds a code in any form, a password, a token or the server's login password
    assert leaks(log_lines, run.secrets) == []
    # nor the metrics page
    assert not [secret for secret in run.secrets if secret in run.metrics_page]


@pytest.fixture
def real_logging() -> Iterator[io.StringIO]:
    """The app's own logging set-up (tihuo.observability.configure_logging) at its default level,
    writing to a buffer; what it replaced is put back afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved = {
        logger: (logger.level, logger.disabled)
        for logger in [root, *logging.root.manager.loggerDict.values()]
        if isinstance(logger, logging.Logger)
    }
    configure_logging("INFO", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for logger, (level, disabled) in saved.items():
            logger.setLevel(level)
            logger.disabled = disabled


async def test_at_the_default_level_no_statement_hash_phone_or_remark_is_logged(
    gql, client, rt, real_logging
):
    run = await run_everything(gql, client, rt)

    lines = real_logging.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    # the app's own INFO lines are there (so the set-up was really in force)...
    assert {"redeem", "download", "notify.sms", "provisioning.active"} <= {e.get("event") for e in entries}
    # ...and nothing from the drivers or SQLAlchemy below WARNING
    assert [e for e in entries if e["logger"].startswith(("sqlalchemy", "aiosqlite", "asyncpg"))] == []
    assert [line for line in lines if SQL.search(line)] == []
    # no phone number in full (the SMS line masks it), no remark, no secret
    assert leaks(lines, {*run.secrets, MEMBER_PHONE, REMARK}) == []
    assert any("139****5678" in line for line in lines)
