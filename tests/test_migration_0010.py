"""Migration 0010 (provisioning on real platforms) on data: going down and up again keeps every order,
and each job still to send its SMS gets a login password drawn at random and sealed under the
configured key, which nothing derives from the server secret; jobs that are DONE get none."""

from __future__ import annotations

import base64
import os

import pytest
from alembic import command
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from models import JobStatus, Order, ProvisioningJob
from services.login_passwords import PasswordKeys, Sealed
from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from tests.provisioning_helpers import RecordingNotifier, place_order
from tihuo.migrate import _with_sqlite_foreign_keys_off, alembic_config, migrate

pytestmark = pytest.mark.usefixtures("catalog")


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    config = alembic_config()

    def _down(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    if engine.dialect.name == "sqlite":
        async with engine.connect() as connection:
            await connection.run_sync(_with_sqlite_foreign_keys_off, _down)
        return
    async with engine.begin() as connection:
        await connection.run_sync(_down)


async def test_0010_seals_a_random_password_for_every_job_still_to_send_its_sms(rt, member, monkeypatch):
    # given an order already open (its SMS sent) and one still queued, at 0009
    opened = await place_order(rt, member.id)
    job = await claim_job(rt, "w1")
    assert job is not None
    await run_job(rt, SimulatedProvisioner(rt), RecordingNotifier(), job)
    queued = await place_order(rt, member.id)
    await downgrade(rt.db.write_engine, "0009")

    # when it is brought to the latest version with a key of the operator's own
    key = os.urandom(32)
    monkeypatch.setenv("TIHUO_LOGIN_PASSWORD_KEYS", f"7:{base64.b64encode(key).decode()}")
    await migrate(rt.db.write_engine)

    # then the queued job holds a fresh 16-character password sealed under key 7, the open one none
    async with rt.db.read() as session:
        rows = {
            order_no: (status, cipher, version)
            for order_no, status, cipher, version in await session.execute(
                select(
                    Order.order_no,
                    ProvisioningJob.status,
                    ProvisioningJob.password_cipher,
                    ProvisioningJob.password_key_version,
                ).join(Order, Order.id == ProvisioningJob.order_id)
            )
        }
    assert rows[opened.order_no] == (JobStatus.DONE, None, None)
    status, cipher, version = rows[queued.order_no]
    assert (status, version) == (JobStatus.QUEUED, 7)
    password = PasswordKeys({7: key}).open(Sealed(cipher, version), queued.order_no)
    assert len(password) == 16
    with pytest.raises(KeyError):
        rt.password_keys.open(Sealed(cipher, version), queued.order_no)  # not the demo's derived key
