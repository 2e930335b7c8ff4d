"""docs/provisioning-bridge.openapi.yaml is what tihuo and a bridge actually say to each other:
every request tihuo sends (create, task poll, DELETE) and every answer of the tests' platform
(tests/fake_provider.FakePlatform) is validated against it with jsonschema, and so are the
callbacks the platform sends and tihuo's answers to them."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator

from models import OrderStatus
from services.notifiers import notifier_from_settings
from services.orders import cancel_order
from services.provisioners import provisioner_from_settings
from services.provisioning_jobs import claim_job, run_job
from services.runtime import Caller
from tests.fake_provider import (
    PROVIDER_SECRET,
    FakePlatform,
    callback_headers,
    platform_settings,
    serve_platform,
)
from tests.provisioning_helpers import order_state, place_order, with_settings

pytestmark = pytest.mark.usefixtures("catalog")

SPEC = yaml.safe_load(
    (Path(__file__).parents[1] / "docs" / "provisioning-bridge.openapi.yaml").read_text("utf-8")
)
T0 = datetime(2027, 3, 1, 2, 0, 0, tzinfo=UTC)


def check(schema: dict[str, Any], value: Any) -> None:
    """Validate `value` against an OpenAPI 3.1 schema (JSON Schema 2020-12), refs into the document."""
    Draft202012Validator({**schema, "components": SPEC["components"]}).validate(value)


def _ref(item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = SPEC
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def operation(path: str, method: str) -> dict[str, Any]:
    return SPEC["paths"][path][method.lower()]


def response(path: str, method: str, status: int) -> dict[str, Any]:
    """The documented response for `status` (or its 4XX / 5XX range): a missing one fails the test."""
    responses = operation(path, method)["responses"]
    found = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    assert found is not None, f"{method} {path} answering {status} is not in the document"
    return _ref(found)


def check_answer(path: str, method: str, status: int, body: Any) -> None:
    content = response(path, method, status).get("content")
    if content is not None:
        check(content["application/json"]["schema"], body)


def check_signed_headers(headers: dict[str, str], path: str, method: str) -> None:
    parameters = [
        _ref(p)
        for p in [*SPEC["paths"][path].get("parameters", []), *operation(path, method).get("parameters", [])]
    ]
    for parameter in parameters:
        if parameter["in"] != "header":
            continue
        value = headers.get(parameter["name"].lower())
        assert value is not None or not parameter.get("required"), parameter["name"]
        if value is not None:
            check(parameter["schema"], value)


@pytest.fixture
async def platform(clock) -> AsyncIterator[FakePlatform]:  # type: ignore[no-untyped-def]
    clock.set(T0)
    async with serve_platform(
        finish_after=10, root_password="Spec!Root-pass1", clock=lambda: clock().timestamp()
    ) as running:
        yield running


async def step(rt) -> None:  # type: ignore[no-untyped-def]
    job = await claim_job(rt, "w1")
    assert job is not None
    provisioner, notifier = provisioner_from_settings(rt), notifier_from_settings(rt)
    try:
        await run_job(rt, provisioner, notifier, job)
    finally:
        await provisioner.aclose()
        await notifier.aclose()


async def test_what_tihuo_sends_and_the_platform_answers_follows_the_document(
    rt, platform, member, admin, clock
):
    prt = with_settings(rt, **platform_settings(platform))
    # one order accepted, polled while running, once with a 500, then active with a root password
    opened = await place_order(prt, member.id)
    await step(prt)
    for error_rate in (0.0, 1.0, 0.0):
        platform.poll_error_rate = error_rate
        clock.set((await order_state(prt, opened.order_id)).job.run_after)
        await step(prt)
    # one whose task fails, one cancelled while it runs, one opened at once
    platform.fail_reason = "image missing"
    failed = await place_order(prt, member.id)
    await step(prt)
    while (state := await order_state(prt, failed.order_id)).order.status is OrderStatus.PROVISIONING:
        clock.set(state.job.run_after)
        await step(prt)
    platform.fail_reason = None
    cancelled = await place_order(prt, member.id)
    await step(prt)
    await cancel_order(prt, Caller(viewer=admin.viewer), str(cancelled.order_id))
    platform.accept = False
    await place_order(prt, member.id)
    await step(prt)

    kinds = set()
    for seen, status, body in platform.answered:
        if seen.path == "/sms":
            continue
        if seen.method == "POST":
            path = "/"
            check(operation(path, "POST")["requestBody"]["content"]["application/json"]["schema"], seen.json)
            assert seen.headers["idempotency-key"] == seen.json["orderNo"]
        else:
            path = "/tasks/{taskId}"
            assert seen.body == b""
            task_id = seen.path.removeprefix("/provision/tasks/")
            check(SPEC["paths"][path]["parameters"][0]["schema"], task_id)
        check_signed_headers(seen.headers, path, seen.method)
        check_answer(path, seen.method, status, body)
        kinds.add((seen.method, status, None if body is None else body.get("status")))
    # every kind of exchange the document describes was seen
    assert kinds >= {
        ("POST", 202, "accepted"),
        ("POST", 201, "active"),
        ("GET", 200, "running"),
        ("GET", 500, None),
        ("GET", 200, "active"),
        ("GET", 200, "failed"),
        ("DELETE", 204, None),
    }


async def test_the_callbacks_tihuo_takes_and_its_answers_follow_the_document(rt, platform, member, clock):
    from tihuo.app import create_app

    prt = with_settings(rt, **platform_settings(platform))
    placed = await place_order(prt, member.id)
    await step(prt)
    path = "/provisioning/callback"
    bodies = [
        {"taskId": f"task-{placed.order_no}", "orderNo": placed.order_no, "status": "running"},
        {
            "taskId": f"task-{placed.order_no}",
            "orderNo": placed.order_no,
            "status": "active",
            "ipAddress": "203.0.113.7",
        },
        {"taskId": "task-unknown", "orderNo": placed.order_no, "status": "failed", "reason": "no"},
    ]
    transport = httpx.ASGITransport(app=create_app(runtime=prt), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        statuses = []
        for body in bodies:
            check(operation(path, "POST")["requestBody"]["content"]["application/json"]["schema"], body)
            raw = json.dumps(body).encode()
            headers = callback_headers(raw, PROVIDER_SECRET, clock().timestamp())
            check_signed_headers({k.lower(): v for k, v in headers.items()}, path, "POST")
            answer = await http.post(path, content=raw, headers=headers)
            check_answer(path, "POST", answer.status_code, answer.json())
            statuses.append(answer.status_code)
        unsigned = await http.post(path, content=b"{}", headers={"Content-Type": "application/json"})
        check_answer(path, "POST", unsigned.status_code, unsigned.json())
        bad = b"[]"
        malformed = await http.post(
            path, content=bad, headers=callback_headers(bad, PROVIDER_SECRET, clock().timestamp())
        )
        check_answer(path, "POST", malformed.status_code, malformed.json())
    assert [*statuses, unsigned.status_code, malformed.status_code] == [200, 200, 404, 401, 400]


def test_the_document_is_openapi_3_1_and_names_the_signature_headers():
    assert SPEC["openapi"] == "3.1.0"
    headers = {p["name"] for p in SPEC["components"]["parameters"].values()}
    assert headers == {"X-Tihuo-Timestamp", "X-Tihuo-Signature"}
    assert re.fullmatch(
        SPEC["components"]["parameters"]["Signature"]["schema"]["pattern"], "sha256=" + "0" * 64
    )
