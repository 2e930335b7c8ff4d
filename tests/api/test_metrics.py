"""GET /metrics: GraphQL requests by operation and outcome, redemptions by result, provisioning
attempts and latency, batch generation, and jobs by state read from the database at scrape time.

The registry lives as long as the process, so counters are compared before and after an action."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services import codes, metrics
from services.notifiers import LogNotifier
from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from tests.factories import cloud_server_config, create_batch, download_codes, line_id
from tests.provisioning_helpers import place_order, with_settings

pytestmark = pytest.mark.usefixtures("catalog")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

QUOTE = """
query ($config: ProductConfigInput!) {
  quote(config: $config) { __typename ... on Quote { linuxPrice } ... on Error { code } } }
"""
NAMED_QUOTE = """
query PriceOneMonth($config: ProductConfigInput!) { quote(config: $config) { __typename } }
"""
PREVIEW = """
query ($code: String!) { redemptionPreview(code: $code) { ... on Error { code } } }
"""
REDEEM = """
mutation ($input: RedeemCardInput!) { redeemCard(input: $input) {
  __typename ... on RedeemCardSuccess { order { status } } ... on Error { code } } }
"""
IMAGES = "query { regions { lines { code osImages { id name } } } }"


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def ubuntu_on_sh_bgp(gql: Any, user: Any) -> str:
    result = await gql(IMAGES, user=user)
    [found] = [
        image["id"]
        for region in result["data"]["regions"]
        for line in region["lines"]
        if line["code"] == "sh-bgp"
        for image in line["osImages"]
        if image["name"] == "Ubuntu 22.04 x64"
    ]
    return found


async def test_metrics_count_operations_by_name_and_outcome_and_redemptions_by_result(
    gql, client, admin, member
):
    # given one card, its image, and the counters as they stand
    made = await create_batch(gql, admin, quantity=1)
    [code] = await download_codes(gql, client, admin, made["id"])
    image = await ubuntu_on_sh_bgp(gql, member)
    config = cloud_server_config(await line_id(gql, admin, "sh-bgp"))
    before = await scrape(client)

    # when: a quote, a named quote, a preview of a code nobody made, a redemption, the same card
    # redeemed by an admin (FORBIDDEN), a document that does not parse and one that does not validate
    quoted = await gql(QUOTE, {"config": config}, user=admin)
    named = await gql(NAMED_QUOTE, {"config": config}, user=admin)
    unknown = await gql(PREVIEW, {"code": codes.display(codes.generate())}, user=member)
    redeemed = await gql(REDEEM, {"input": {"code": code, "osImageId": image}}, user=member)
    forbidden = await gql(REDEEM, {"input": {"code": code, "osImageId": image}}, user=admin)
    broken = await gql("query { quote(", user=admin)
    invalid = await gql("query NotAField { nope }", user=admin)
    after = await scrape(client)

    # then every operation is counted once under its name (or first field) and outcome
    assert quoted["data"]["quote"]["__typename"] == "Quote"
    assert named["data"]["quote"]["__typename"] == "Quote"
    assert unknown["data"]["redemptionPreview"] == {"code": "CARD_NOT_FOUND"}
    assert redeemed["data"]["redeemCard"]["__typename"] == "RedeemCardSuccess"
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert broken["data"] is None and "Syntax Error" in broken["errors"][0]["message"]
    assert invalid["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    requests = "tihuo_graphql_requests_total"
    # a named operation counts under its first field: clients do not choose label values
    assert grown(before, after, requests, operation="quote", outcome="ok") == 2
    assert grown(before, after, requests, operation="PriceOneMonth", outcome="ok") == 0
    assert grown(before, after, requests, operation="redemptionPreview", outcome="business_error") == 1
    assert grown(before, after, requests, operation="redeemCard", outcome="ok") == 1
    assert grown(before, after, requests, operation="redeemCard", outcome="error") == 1
    # a document that is not valid names nothing we can trust
    assert grown(before, after, requests, operation="unknown", outcome="error") == 2
    assert grown(before, after, requests, operation="NotAField", outcome="error") == 0
    assert grown(before, after, "tihuo_graphql_request_seconds_count", operation="redeemCard") == 2
    assert grown(before, after, "tihuo_graphql_request_seconds_count", operation="quote") == 2
    assert grown(before, after, "tihuo_graphql_request_seconds_sum", operation="quote") > 0
    # and redemptions by result; the admin's refused call was no attempt
    redemptions = "tihuo_redemptions_total"
    assert grown(before, after, redemptions, action="preview", result="CARD_NOT_FOUND") == 1
    assert grown(before, after, redemptions, action="redeem", result="success") == 1
    assert grown(before, after, redemptions, action="redeem", result="CARD_USED") == 0
    assert grown(before, after, redemptions, action="preview", result="success") == 0


async def test_metrics_answer_in_the_prometheus_text_format(client):
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE tihuo_graphql_requests_total counter" in response.text
    assert "# TYPE tihuo_provisioning_jobs gauge" in response.text
    assert 'tihuo_provisioning_attempts_total{outcome="released"}' in response.text


async def test_jobs_by_state_are_read_from_the_database_at_scrape_time(client, rt, member):
    # given no job, then two queued orders
    empty = (await client.get("/metrics")).text
    for state in ("QUEUED", "RUNNING", "DONE", "FAILED"):
        assert f'tihuo_provisioning_jobs{{state="{state}"}} 0.0\n' in empty
    await place_order(rt, member.id)
    await place_order(rt, member.id)
    queued = (await client.get("/metrics")).text
    assert 'tihuo_provisioning_jobs{state="QUEUED"} 2.0\n' in queued

    # when one runs to ACTIVE
    job = await claim_job(rt, "w1")
    assert job is not None
    running = (await client.get("/metrics")).text
    before = parse(running)
    await run_job(rt, SimulatedProvisioner(rt), LogNotifier(), job)
    after_text = (await client.get("/metrics")).text
    after = parse(after_text)

    # then the states follow the database, and the attempt and its provisioner call are counted
    assert 'tihuo_provisioning_jobs{state="QUEUED"} 1.0\n' in running
    assert 'tihuo_provisioning_jobs{state="RUNNING"} 1.0\n' in running
    assert 'tihuo_provisioning_jobs{state="QUEUED"} 1.0\n' in after_text
    assert 'tihuo_provisioning_jobs{state="RUNNING"} 0.0\n' in after_text
    assert 'tihuo_provisioning_jobs{state="DONE"} 1.0\n' in after_text
    assert grown(before, after, "tihuo_provisioning_attempts_total", outcome="active") == 1
    assert grown(before, after, "tihuo_provisioning_seconds_count") == 1


async def test_a_failed_attempt_is_counted_as_retried_then_failed(client, rt, member):
    # given an order, and a provisioner that always fails for a while
    await place_order(rt, member.id)
    failing = with_settings(
        rt, simulated_failure="transient", provision_max_attempts=2, provision_backoff_ms=0
    )
    before = await scrape(client)

    # when both attempts run
    for _ in range(2):
        job = await claim_job(failing, "w1")
        assert job is not None
        await run_job(failing, SimulatedProvisioner(failing), LogNotifier(), job)
    after = await scrape(client)

    # then the first went back to the queue and the second failed the order
    assert grown(before, after, "tihuo_provisioning_attempts_total", outcome="retried") == 1
    assert grown(before, after, "tihuo_provisioning_attempts_total", outcome="failed") == 1
    assert grown(before, after, "tihuo_provisioning_seconds_count") == 2
    assert value(after, "tihuo_provisioning_jobs", state="FAILED") == 1


async def test_batch_generation_is_timed_and_its_cards_counted(gql, client, admin):
    before = await scrape(client)

    await create_batch(gql, admin, quantity=25)
    after = await scrape(client)

    assert grown(before, after, "tihuo_card_batch_generation_seconds_count") == 1
    assert grown(before, after, "tihuo_card_batch_generation_seconds_sum") > 0
    assert grown(before, after, "tihuo_card_batch_cards_total") == 25


async def test_metrics_can_be_turned_off(rt):
    from tihuo.app import create_app

    app = create_app(runtime=with_settings(rt, metrics_enabled=False))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        response = await http.get("/metrics")

    assert response.status_code == 404


def test_operation_labels_are_cut_and_capped(monkeypatch):
    monkeypatch.setattr(metrics, "_operations", set())

    assert metrics.operation_label(None) == "unknown"
    assert metrics.operation_label("x" * 100) == "x" * 64
    for n in range(metrics.OPERATIONS_MAX - 1):
        assert metrics.operation_label(f"Operation{n}") == f"Operation{n}"
    assert metrics.operation_label("OneTooMany") == "other"
    assert metrics.operation_label("Operation7") == "Operation7"
    assert metrics.operation_label("x" * 70) == "x" * 64
