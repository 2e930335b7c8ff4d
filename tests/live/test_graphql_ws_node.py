"""The npm `graphql-ws` client (the protocol's reference implementation) subscribing from Node.js:
it signs in with connectionParams, gets the order now and every change, and sees the stream
complete after ACTIVE. Needs `npm ci` in tests/live (CI does it; this test must not be skipped there)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from tests.live.conftest import ORDER_UPDATES
from tests.provisioning_helpers import RecordingNotifier, place_order

HERE = Path(__file__).parent
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.usefixtures("catalog"),
    pytest.mark.skipif(NODE is None, reason="Node.js is not installed"),
    pytest.mark.skipif(
        not (HERE / "node_modules" / "graphql-ws").is_dir(),
        reason="tests/live/node_modules is missing: run `npm ci` in tests/live",
    ),
]


async def test_the_graphql_ws_client_follows_an_order_to_active(rt, member, live):
    placed = await place_order(rt, member.id)
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(HERE / "subscribe.mjs"),
        live.ws_url,
        member.token,
        ORDER_UPDATES,
        json.dumps({"id": str(placed.order_id)}),
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None

    async def line() -> dict:  # type: ignore[type-arg]
        async with asyncio.timeout(20):
            raw = await process.stdout.readline()  # type: ignore[union-attr]
        assert raw, (await process.stderr.read()).decode()  # type: ignore[union-attr]
        return json.loads(raw)

    try:
        assert await line() == {"connected": True}
        assert (await line())["next"]["data"]["orderUpdates"]["status"] == "PENDING"
        job = await claim_job(rt, "w1")
        assert job is not None
        assert (await line())["next"]["data"]["orderUpdates"]["status"] == "PROVISIONING"
        await run_job(rt, SimulatedProvisioner(rt), RecordingNotifier(), job)
        active = (await line())["next"]
        assert "errors" not in active
        assert active["data"]["orderUpdates"]["status"] == "ACTIVE"
        assert active["data"]["orderUpdates"]["instance"]["status"] == "RUNNING"
        assert await line() == {"complete": True}
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
