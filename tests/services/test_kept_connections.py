"""The http provisioner and notifier keep one client each: their calls reuse its connection, and the
worker closes it as it stops, run directly, in the served app's lifespan, or as `tihuo worker`."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from services.notifiers import notifier_from_settings
from services.provisioners import Active, TransientFailure, provisioner_from_settings
from services.worker import run_worker
from tests.fake_provider import (
    HANG,
    SMS_SECRET,
    FakeProvider,
    http_notifier,
    http_provisioner,
    http_rt,
    request_for,
)
from tests.provisioning_helpers import place_order, wait_until


async def test_calls_reuse_one_connection_per_endpoint(settings, provider, closing):
    # given a provisioner and a notifier on one server
    provider.script = [
        (201, {"ipAddress": "10.1.2.3", "ref": "p-1"}),
        (204, ""),
        (201, {"ipAddress": "10.1.2.4", "ref": "p-2"}),
        (204, ""),
    ]
    provisioner = closing(http_provisioner(settings, provider))
    notifier = closing(http_notifier(settings, provider))

    # when each is called twice
    first = await provisioner.provision(request_for("T0001"))
    await notifier.send_sms("13800000001", "one", secret="x")
    second = await provisioner.provision(request_for("T0002"))
    await notifier.send_sms("13800000001", "two", secret="x")

    # then each sent both its requests on one connection, its own
    assert (first, second) == (
        Active(ip_address="10.1.2.3", provider_ref="p-1"),
        Active(ip_address="10.1.2.4", provider_ref="p-2"),
    )
    assert [seen.path for seen in provider.seen] == ["/provision", "/sms", "/provision", "/sms"]
    [provisioning] = provider.connections_on("/provision")
    [sms] = provider.connections_on("/sms")
    assert provisioning != sms
    assert provider.open_connections() == 2


async def test_the_kept_client_follows_no_redirect(settings, provider, closing):
    provider.script = [(307, "elsewhere", {"Location": f"{provider.url}/sms"})]
    provisioner = closing(http_provisioner(settings, provider))

    with pytest.raises(TransientFailure) as failure:
        await provisioner.provision(request_for())

    assert str(failure.value) == "HTTP 307: elsewhere"
    assert [seen.path for seen in provider.seen] == ["/provision"]


async def test_the_kept_client_gives_up_after_the_timeout(settings, provider, closing):
    provider.script = [HANG]
    provisioner = closing(http_provisioner(settings, provider, provision_timeout_seconds=0.3))

    started = asyncio.get_running_loop().time()
    with pytest.raises(TransientFailure) as failure:
        await provisioner.provision(request_for())
    took = asyncio.get_running_loop().time() - started

    assert str(failure.value) == "no answer within 0.3 s (ReadTimeout)"
    assert 0.3 <= took < 1.5


async def test_a_closed_provisioner_opens_a_new_connection_when_called_again(settings, provider, closing):
    provider.script = [(201, {"ipAddress": None, "ref": "p-1"}), (201, {"ipAddress": None, "ref": "p-2"})]
    provisioner = closing(http_provisioner(settings, provider))

    await provisioner.provision(request_for("T0001"))
    await provisioner.aclose()
    await wait_until(provider.all_closed, seconds=2)
    await provisioner.provision(request_for("T0002"))

    assert len(provider.connections_on("/provision")) == 2
    assert provider.open_connections() == 1


def worker_rt(rt, provider: FakeProvider):  # type: ignore[no-untyped-def]
    """The provisioner and the notifier both over http, to `provider`; a quick poll."""
    return http_rt(
        rt,
        provider,
        notifier="http",
        notifier_url=f"{provider.url}/sms",
        notifier_secret=SMS_SECRET,
        worker_poll_seconds=0.05,
    )


async def open_two_products(rt, member_id: int, provider: FakeProvider) -> None:  # type: ignore[no-untyped-def]
    """Two orders, one after the other, each opened and texted by the running worker."""
    provider.script = [
        (201, {"ipAddress": "10.1.2.3", "ref": "p-1"}),
        (204, ""),
        (201, {"ipAddress": "10.1.2.4", "ref": "p-2"}),
        (204, ""),
    ]
    for opened in (2, 4):
        await place_order(rt, member_id)

        async def texted(opened: int = opened) -> bool:
            return len(provider.seen) == opened

        await wait_until(texted, seconds=5)
    assert [seen.path for seen in provider.seen] == ["/provision", "/sms", "/provision", "/sms"]
    # one connection each for the provisioner and the notifier, both still open between calls
    assert len(provider.connections_on("/provision")) == len(provider.connections_on("/sms")) == 1
    assert provider.open_connections() == 2


@pytest.mark.usefixtures("catalog")
async def test_the_worker_closes_its_kept_connections_as_it_stops(rt, member, provider):
    http = worker_rt(rt, provider)
    provisioner, notifier = provisioner_from_settings(http), notifier_from_settings(http)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(http, provisioner, notifier, worker_id="w1", stop=stop, poll_seconds=0.05)
    )
    try:
        await open_two_products(http, member.id, provider)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 5)

    await wait_until(provider.all_closed, seconds=2)
    assert (provisioner.http.client, notifier.http.client) == (None, None)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("catalog")
async def test_the_served_app_closes_its_workers_connections_at_shutdown(rt, member, provider):
    from tihuo.app import create_app

    http = worker_rt(rt, provider)
    app = create_app(runtime=http, start_worker=True)

    async with app.router.lifespan_context(app):
        await open_two_products(http, member.id, provider)

    await wait_until(provider.all_closed, seconds=2)


@pytest.mark.usefixtures("catalog")
async def test_tihuo_worker_closes_its_connections_when_told_to_stop(rt, member, provider):
    from tihuo.cli import _work

    # the command's own runtime on the test's database, stopped by SIGTERM as a service manager would
    http = worker_rt(rt, provider)
    working = asyncio.create_task(_work(http.settings))
    try:
        await open_two_products(http, member.id, provider)
    finally:
        if not working.done():
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(working, 5)

    await wait_until(provider.all_closed, seconds=2)
