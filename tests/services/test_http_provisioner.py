"""The http provisioner and notifier against a real HTTP server on loopback: signed requests with the
order number as idempotency key; 2xx opens, 4xx refuses, 5xx, other statuses, silence and connection
errors are retried. Their kept connections: tests/services/test_kept_connections.py."""

from __future__ import annotations

import asyncio
import socket

import pytest

from core.settings import SettingsError, load_settings
from models import JobStatus, OrderStatus
from services.notifiers import NotificationFailed, notifier_from_settings
from services.provisioners import (
    Active,
    HttpProvisioner,
    Refused,
    TransientFailure,
    provisioner_from_settings,
)
from services.provisioning_jobs import claim_job, run_job
from tests.fake_provider import (
    HANG,
    PROVIDER_SECRET,
    SMS_SECRET,
    http_notifier,
    http_provisioner,
    http_rt,
    request_for,
    signed_by,
)
from tests.provisioning_helpers import (
    RecordingNotifier,
    job_password,
    order_state,
    place_order,
    with_settings,
)


async def attempt(rt, notifier=None) -> None:  # type: ignore[no-untyped-def]
    job = await claim_job(rt, "w1")
    assert job is not None
    provisioner = provisioner_from_settings(rt)
    try:
        await run_job(rt, provisioner, notifier or RecordingNotifier(), job)
    finally:
        await provisioner.aclose()


@pytest.mark.usefixtures("catalog")
async def test_a_5xx_is_retried_under_the_same_idempotency_key_and_the_retry_opens_one_instance(
    rt, member, clock, provider
):
    # given a provider that fails once, then opens the server
    provider.script = [(500, "upstream down"), (201, {"ipAddress": "10.1.2.3", "ref": "prov-77"})]
    http = http_rt(rt, provider)
    placed = await place_order(rt, member.id)
    password = await job_password(rt, placed.order_id)
    notifier = RecordingNotifier()

    # when the first attempt meets the 500
    await attempt(http, notifier)
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.last_error) == (
        OrderStatus.PENDING,
        JobStatus.QUEUED,
        "HTTP 500: upstream down",
    )
    # and the retry falls due
    clock.set(state.job.run_after)
    await attempt(http, notifier)

    # then one instance exists, with the provider's address and reference
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.attempts) == (
        OrderStatus.ACTIVE,
        JobStatus.DONE,
        2,
    )
    assert [(i.ip_address, i.provider_ref) for i in state.instances] == [("10.1.2.3", "prov-77")]
    # and the provider saw the same signed request twice, keyed by the order number
    assert len(provider.seen) == 2
    for seen in provider.seen:
        assert seen.path == "/provision"
        assert seen.headers["idempotency-key"] == placed.order_no
        assert seen.headers["content-type"] == "application/json"
        assert signed_by(seen, PROVIDER_SECRET)
        assert seen.json == {
            "orderNo": placed.order_no,
            "productType": "CLOUD_SERVER",
            "regionName": "华东-上海",
            "lineCode": "sh-bgp",
            "lineName": "上海 BGP",
            "ipPool": "198.51.100.0/24",
            "config": state.order.config,
            "osImageCode": "ubuntu-22.04",
            "productModelCode": None,
            "planCode": None,
            "loginPassword": password,
            "memberId": str(member.id),
            "memberPhone": "13800000000",
            "realname": None,
        }
    assert provider.seen[0].body == provider.seen[1].body
    # and the member was sent the password the provider was given
    assert [sms.text for sms in notifier.sent] == [
        f"【tihuo】您的云服务器已开通，IP：10.1.2.3，登录密码：{password}，请登录后及时修改密码。"
    ]


@pytest.mark.usefixtures("catalog")
async def test_a_4xx_fails_the_order_with_the_status_and_a_redacted_excerpt(rt, member, provider, caplog):
    placed = await place_order(rt, member.id)
    password = await job_password(rt, placed.order_id)
    # a provider that echoes the request back must not put the password into the reason or a log
    provider.script = [(422, f'{{"error": "image not offered",\n "loginPassword": "{password}"}}')]

    await attempt(http_rt(rt, provider))

    state = await order_state(rt, placed.order_id)
    reason = 'HTTP 422: {"error": "image not offered", "loginPassword": "******"}'
    assert (state.order.status, state.order.failure_reason) == (OrderStatus.FAILED, reason)
    assert (state.job.status, state.job.attempts, state.job.last_error) == (JobStatus.FAILED, 1, reason)
    assert state.instances == []
    assert len(provider.seen) == 1
    assert all(password not in record.getMessage() for record in caplog.records)


@pytest.mark.usefixtures("catalog")
async def test_a_provider_that_hangs_past_the_timeout_is_retried(rt, member, provider):
    provider.script = [HANG]
    placed = await place_order(rt, member.id)

    started = asyncio.get_running_loop().time()
    await attempt(http_rt(rt, provider, provision_timeout_seconds=0.3))
    took = asyncio.get_running_loop().time() - started

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.attempts) == (
        OrderStatus.PENDING,
        JobStatus.QUEUED,
        1,
    )
    assert state.job.last_error.startswith("no answer within 0.3 s")
    assert state.instances == []
    assert 0.3 <= took < 1.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("status", "body", "raised", "reason"),
    [
        (400, "bad request", Refused, "HTTP 400: bad request"),
        (404, "no such line", Refused, "HTTP 404: no such line"),
        (409, "x" * 300, Refused, "HTTP 409: " + "x" * 200),
        (500, "oops", TransientFailure, "HTTP 500: oops"),
        (503, "", TransientFailure, "HTTP 503: "),
        (302, "moved", TransientFailure, "HTTP 302: moved"),
        (200, "not json", TransientFailure, "unreadable answer: HTTP 200: not json"),
        (200, {"ipAddress": 5}, TransientFailure, 'unreadable answer: HTTP 200: {"ipAddress": 5}'),
    ],
)
async def test_statuses_map_to_refused_or_transient(
    settings, provider, closing, status, body, raised, reason
):
    provider.script = [(status, body)]
    provisioner = closing(http_provisioner(settings, provider))

    with pytest.raises(raised) as failure:
        await provisioner.provision(request_for())

    assert str(failure.value) == reason


async def test_a_2xx_answer_may_leave_out_the_address(settings, provider, closing):
    provider.script = [(200, {"ipAddress": None, "ref": 12345})]
    provisioner = closing(http_provisioner(settings, provider))

    assert await provisioner.provision(request_for()) == Active(ip_address=None, provider_ref="12345")


async def test_a_refused_connection_is_transient(settings, closing):
    provisioner = closing(
        HttpProvisioner(
            settings.model_copy(
                update={
                    "provisioner_url": f"http://127.0.0.1:{free_port()}/provision",
                    "provisioner_secret": PROVIDER_SECRET,
                }
            )
        )
    )

    with pytest.raises(TransientFailure) as failure:
        await provisioner.provision(request_for())

    assert str(failure.value).startswith("connection error: ConnectError")


# ---------------------------------------------------------------- the http notifier


async def test_the_http_notifier_posts_a_signed_sms(settings, provider, closing):
    notifier = closing(http_notifier(settings, provider))

    await notifier.send_sms("13800000001", "【tihuo】登录密码：Pa55", secret="Pa55")

    [seen] = provider.seen
    assert seen.path == "/sms"
    assert seen.json == {"phone": "13800000001", "text": "【tihuo】登录密码：Pa55"}
    assert signed_by(seen, SMS_SECRET)


async def test_the_http_notifier_reports_a_refusal_without_the_text(settings, provider, closing):
    provider.script = [(502, "echo: 【tihuo】登录密码：Pa55")]
    notifier = closing(http_notifier(settings, provider))

    with pytest.raises(NotificationFailed) as failure:
        await notifier.send_sms("13800000001", "【tihuo】登录密码：Pa55", secret="Pa55")

    assert str(failure.value) == "SMS gateway answered HTTP 502"


async def test_the_http_notifier_sends_nothing_without_a_phone(settings, provider, closing):
    await closing(http_notifier(settings, provider)).send_sms(None, "text", secret="x")

    assert provider.seen == []


# ---------------------------------------------------------------- configuration


def test_the_http_provisioner_and_notifier_need_a_url_and_a_secret(tmp_path):
    with pytest.raises(SettingsError) as provisioner:
        load_settings(_env_file=None, data_dir=tmp_path, provisioner="http", provisioner_secret="s")
    with pytest.raises(SettingsError) as notifier:
        load_settings(_env_file=None, data_dir=tmp_path, notifier="http", notifier_url="http://sms.example")

    assert str(provisioner.value) == (
        "TIHUO_PROVISIONER=http needs TIHUO_PROVISIONER_URL and TIHUO_PROVISIONER_SECRET"
    )
    assert str(notifier.value) == "TIHUO_NOTIFIER=http needs TIHUO_NOTIFIER_URL and TIHUO_NOTIFIER_SECRET"


def test_the_settings_choose_the_provisioner_and_notifier(rt):
    configured = with_settings(
        rt,
        provisioner="http",
        provisioner_url="http://provider.example/open",
        provisioner_secret="s1",
        notifier="http",
        notifier_url="http://sms.example/send",
        notifier_secret="s2",
    )

    assert type(provisioner_from_settings(configured)).__name__ == "HttpProvisioner"
    assert type(notifier_from_settings(configured)).__name__ == "HttpNotifier"
    assert type(provisioner_from_settings(rt)).__name__ == "SimulatedProvisioner"
    assert type(notifier_from_settings(rt)).__name__ == "LogNotifier"
    assert "s1" not in repr(configured.settings) and "s2" not in repr(configured.settings)
