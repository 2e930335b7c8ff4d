"""Webhook benchmark (issue 11). Prints its figures; not a test.

    python bench/webhooks.py [--backend sqlite|postgres|both] [--seconds 20] [--clients 16]
                             [--burst 10000]

Per back-end, on a fresh database, against one uvicorn API process on loopback (no worker in it):
  1. redeemCard throughput with one enabled endpoint subscribed to CARD_REDEEMED and with none, in
     the same run: 8 turns of a quarter of --seconds, the endpoint enabled every other turn (so the
     machine's other load weighs on both alike), and the ratio (target >= 0.9). No worker sends
     meanwhile: this measures what the outbox adds to the redemption's write.
  2. a burst of --burst redemptions with the endpoint enabled and one `tihuo worker` process sending
     to a receiver process that verifies every delivery with the standardwebhooks package and
     records its webhook-id: the time the backlog takes to drain after the burst, and whether every
     card.redeemed arrived exactly once (by webhook-id).
PostgreSQL: TIHUO_BENCH_POSTGRES_URL (default …/tihuo_bench, created when missing, reset).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cards import SECRET  # noqa: E402
from bench.redeem import REDEEM, Run, admin_viewer, drive, free_port, setup, start_server  # noqa: E402
from models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookMessage  # noqa: E402
from services import webhooks  # noqa: E402
from services.runtime import Caller  # noqa: E402


async def receive(port: int, secret: str, log_path: Path) -> None:
    """The receiver process: HTTP/1.1 keep-alive, every POST verified with standardwebhooks, its
    webhook-id appended to `log_path` ("bad <id>" when it does not verify), answered 204."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    verifier = Webhook(secret)
    log = log_path.open("a", buffering=1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request_line := await reader.readline():
                if not request_line.strip():
                    continue
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                try:
                    verifier.verify(body, headers)
                    log.write(headers["webhook-id"] + "\n")
                except WebhookVerificationError:
                    log.write(f"bad {headers.get('webhook-id')}\n")
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start_receiver(port: int, secret: str, log_path: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--receiver", str(port), str(log_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_RECEIVER_SECRET": secret},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the receiver did not start")


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    worker_env = {
        **os.environ,
        **env,
        "PYTHONPATH": str(ROOT),
        "TIHUO_WEBHOOK_ALLOW_PRIVATE": "true",
        "TIHUO_WORKER_POLL_SECONDS": "0.2",
        # the burst's provisioning jobs sit in flight, so the worker's time goes to the webhooks
        "TIHUO_SIMULATED_DELAY_MS": "600000",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tihuo.cli", "worker"],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def pending(rt) -> int:  # type: ignore[no-untyped-def]
    async with rt.db.read() as session:
        return (
            await session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.status == DeliveryStatus.PENDING)
            )
            or 0
        )


async def set_enabled(rt, enabled: bool) -> None:  # type: ignore[no-untyped-def]
    async with rt.db.write() as session:
        await session.execute(update(WebhookEndpoint).values(enabled=enabled))


async def run(backend: str, seconds: float, clients: int, burst: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cards = burst + (30_000 if backend == "postgres" else 20_000)
        rt, codes, tokens, image = await setup(backend, workdir, cards, clients)
        rt = dataclasses.replace(rt, settings=rt.settings.model_copy(update={"webhook_allow_private": True}))
        receiver_port = free_port()
        received_log = workdir / "received.log"
        admin = Caller(viewer=await admin_viewer(rt))
        _, secret = await webhooks.create_endpoint(
            rt, admin, f"http://127.0.0.1:{receiver_port}/hooks", "bench", [WebhookEvent.CARD_REDEEMED]
        )
        env = {
            "TIHUO_DATABASE_URL": rt.settings.resolved_database_url,
            "TIHUO_SECRET_KEY": SECRET,
            "TIHUO_DATA_DIR": str(workdir),
            "TIHUO_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        server = start_server("tihuo.app:create_app", env, port)
        url = f"http://127.0.0.1:{port}/graphql"
        work = [{"c": code, "os": image} for code in codes]
        burst_work, work = work[:burst], work[burst:]
        try:
            await set_enabled(rt, False)
            await drive(url, REDEEM, work[:300], tokens, 2, "RedeemCardSuccess")  # warm-up
            del work[:300]
            with_hook, without = Run(), Run()
            for turn in range(8):
                hooked = turn % 2 == 1
                await set_enabled(rt, hooked)
                part = await drive(url, REDEEM, work, tokens, seconds / 4, "RedeemCardSuccess")
                del work[: len(part.latencies)]
                (with_hook if hooked else without).add(part)
            async with rt.db.read() as session:
                messages = await session.scalar(select(func.count()).select_from(WebhookMessage))
            # the burst, with one worker sending as it goes
            await set_enabled(rt, True)
            async with rt.db.write() as session:
                await session.execute(
                    update(WebhookDelivery).values(status=DeliveryStatus.FAILED, next_attempt_at=None)
                )
            receiver = start_receiver(receiver_port, secret, received_log)
            worker = start_worker(env)
            try:
                burst_run = await drive(url, REDEEM, burst_work, tokens, 3600, "RedeemCardSuccess")
                ended = time.perf_counter()
                backlog_at_end = await pending(rt)
                while await pending(rt) and time.perf_counter() - ended < 600:  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.1)
                drained = time.perf_counter() - ended
                await asyncio.sleep(0.5)  # the receiver's last lines
            finally:
                for process in (worker, receiver):
                    process.terminate()
                    process.wait(10)
        finally:
            server.terminate()
            server.wait(10)
        lines = received_log.read_text().splitlines() if received_log.exists() else []
        async with rt.db.read() as session:
            burst_messages = (await session.scalar(select(func.count()).select_from(WebhookMessage)) or 0) - (
                messages or 0
            )
        await rt.db.dispose()

    bad = [line for line in lines if line.startswith("bad ")]
    ids = [line for line in lines if not line.startswith("bad ")]
    print(f"\n[{backend}] one uvicorn process, {clients} clients")
    print(without.report("redeemCard, no endpoint"))
    print(with_hook.report("redeemCard, one endpoint for CARD_REDEEMED"))
    print(f"  ratio with endpoint / without: {with_hook.throughput / without.throughput:.2f} (target >= 0.9)")
    print(f"  messages written in the turns with the endpoint: {messages} (successes {with_hook.successes})")
    print(burst_run.report(f"burst of {burst} redemptions, one worker sending meanwhile"))
    print(
        f"  backlog at the burst's end {backlog_at_end}; drained {drained:.1f} s after it (target <= 60 s); "
        f"deliveries/s over burst and drain {len(ids) / (burst_run.elapsed + drained):.0f}"
    )
    once = len(ids) == len(set(ids)) == burst_messages == burst_run.successes
    print(
        f"  received {len(ids)} verified, {len(set(ids))} distinct webhook-ids, {len(bad)} failing verification, "
        f"{burst_messages} messages, {burst_run.successes} successes -> "
        f"{'each exactly once' if once and not bad else 'NOT EXACTLY ONCE'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--receiver", nargs=2, metavar=("PORT", "LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(
            receive(int(args.receiver[0]), os.environ["BENCH_RECEIVER_SECRET"], Path(args.receiver[1]))
        )
        return
    print(f"webhook benchmark on {os.cpu_count()} cores")
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, args.seconds, args.clients, args.burst))


if __name__ == "__main__":
    main()
