"""The typed client proof (issue 13): examples/portal's operations for the portal's pages (sign in,
preview, redeem, watch the order, my cards, my instances) are validated against schema.graphql by
GraphQL Code Generator and the portal's code checked by `tsc --noEmit` against the types it made
(`npm run check`). A schema change that breaks one of the operations fails the check; and the
built client, naming each document by the hash of the manifest its build emitted, runs the pages
against the real app with TIHUO_TRUSTED_DOCUMENTS_ONLY=members.

The watch-the-order subscription is checked against the schema plus the add-on of
shared/api/v2/live.graphql until schema.graphql has a Subscription type of its own.

The portal is copied to a temporary folder and installed there with `npm ci` (the versions of its
package-lock.json). Skipped only where node or npm is missing; .ci/run must run it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from services.notifiers import LogNotifier
from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from tests.browser import loopback_socket, serving
from tests.factories import create_batch, download_codes
from tihuo.app import create_app
from tihuo.persisted import load_manifest

REPO = Path(__file__).resolve().parents[1]
PORTAL = REPO / "examples" / "portal"
SCHEMA = REPO / "schema.graphql"
# shared/api/v2/live.graphql's add-on, for as long as schema.graphql lacks it
LIVE = """
type Subscription {
  orderUpdates(orderId: ID!): Order!
  myOrderUpdates: Order!
}
"""
PAGES = {"SignIn", "PreviewCard", "RedeemCard", "MyCards", "MyInstances"}
TIMEOUT = 300
NODE, NPM = shutil.which("node"), shutil.which("npm")


def run(argv: list[str], cwd: Path, timeout: float = TIMEOUT, **env: str) -> subprocess.CompletedProcess[str]:
    # the tools of this machine and the portal's own, on the portal's files
    return subprocess.run(  # noqa: S603
        argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/portal with its locked dependencies installed."""
    if NODE is None or NPM is None:
        pytest.skip("node and npm are needed for the typed client check (.ci/run has them)")
    copy = tmp_path_factory.mktemp("portal") / "portal"
    shutil.copytree(PORTAL, copy, ignore=shutil.ignore_patterns("node_modules", "build", "gql"))
    installed = run([NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"], copy, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return copy


@pytest.fixture(scope="module")
def built(portal: Path) -> subprocess.CompletedProcess[str]:
    """`npm run check` against schema.graphql, then the client compiled to build/ with the manifest
    of that run beside it (later checks against changed schemas write src/gql/ again)."""
    checked = check(portal, SCHEMA)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tsc = str(portal / "node_modules" / ".bin" / "tsc")
    compiled = run([tsc, "-p", "tsconfig.json", "--noEmit", "false", "--outDir", "build"], portal)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    shutil.copy(portal / "src" / "gql" / "persisted-documents.json", portal / "build" / "manifest.json")
    return checked


def check(portal: Path, schema: Path) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return run([NODE, "scripts/check.mjs"], portal, TIHUO_SCHEMA=str(schema), NO_COLOR="1")


def has_subscriptions(sdl: str) -> bool:
    return any(line.startswith("type Subscription ") for line in sdl.splitlines())


def with_live(sdl: str) -> str:
    return sdl if has_subscriptions(sdl) else sdl + LIVE


def test_the_portals_operations_check_against_schema_graphql(portal, built):
    assert "typed client check passed" in built.stdout
    # the manifest the same build emitted is one tihuo trusts as it is
    trusted = load_manifest(portal / "build" / "manifest.json")
    names = {name for document in trusted.values() for name in document.operation_names}
    live = has_subscriptions(SCHEMA.read_text())
    assert names == (PAGES | {"WatchOrder"} if live else PAGES)


def test_the_watch_the_order_subscription_checks_against_the_live_add_on(portal, tmp_path):
    schema = tmp_path / "schema.graphql"
    schema.write_text(with_live(SCHEMA.read_text()))

    checked = check(portal, schema)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "(with the watch-the-order subscription)" in checked.stdout
    trusted = load_manifest(portal / "src" / "gql" / "persisted-documents.json")
    assert {name for document in trusted.values() for name in document.operation_names} == PAGES | {
        "WatchOrder"
    }


def _rename_field(sdl: str, type_name: str, old: str, new: str) -> str:
    start = sdl.index(f"type {type_name} {{")
    end = sdl.index("\n}", start)
    assert f"\n  {old}" in sdl[start:end]
    return sdl[:start] + sdl[start:end].replace(f"\n  {old}", f"\n  {new}", 1) + sdl[end:]


@pytest.mark.parametrize(
    ("change", "failed_at", "says"),
    [
        (
            lambda sdl: _rename_field(sdl, "Query", "myInstances(", "myProducts("),
            "graphql-codegen",
            'Cannot query field "myInstances" on type "Query"',
        ),
        (
            # the operation still validates, but the page's code no longer types
            lambda sdl: _rename_field(sdl, "Instance", "ipAddress: String", "ipAddress: Int"),
            "tsc",
            "src/pages/myInstances.ts",
        ),
        (
            # the argument, described or not (schema.graphql describes every argument)
            lambda sdl: re.sub(
                r'(orderUpdates\((?:\s*"""[^"]*""")?\s*)orderId: ID!', r"\1id: ID!", with_live(sdl), count=1
            ),
            "graphql-codegen",
            'Unknown argument "orderId" on field "Subscription.orderUpdates"',
        ),
    ],
    ids=["field-renamed", "scalar-changed", "subscription-argument-renamed"],
)
def test_a_schema_change_that_breaks_an_operation_fails_the_check(portal, tmp_path, change, failed_at, says):
    schema = tmp_path / "schema.graphql"
    schema.write_text(change(SCHEMA.read_text()))

    checked = check(portal, schema)

    output = checked.stdout + checked.stderr
    assert checked.returncode == 1, output
    assert f"typed client check FAILED at {failed_at}" in output
    assert says in output


class Recorder:
    """The app, noting how each GraphQL request named its document."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/graphql":
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"method": scope["method"], "query_string": scope["query_string"].decode()}
        self.requests.append(seen)

        async def noting() -> Message:
            message = await receive()
            if message.get("body"):
                seen["body"] = json.loads(message["body"])
            return message

        await self.app(scope, noting, send)


async def drive(portal: Path, url: str, step: str, **args: Any) -> Any:
    """One page's step through the built client (scripts/drive.mjs), off the event loop's way."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        "scripts/drive.mjs",
        url,
        step,
        json.dumps(args),
        cwd=portal,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_the_built_client_runs_the_portals_pages_by_hash_with_members_held_to_the_list(
    portal, built, rt, gql, client, catalog, admin, member
):
    # given the client built against schema.graphql, and the manifest of that build trusted
    batch = await create_batch(gql, admin, quantity=1)
    [code] = await download_codes(gql, client, admin, batch["id"])
    manifest = portal / "build" / "manifest.json"
    rt.settings = rt.settings.model_copy(
        update={"trusted_documents": manifest, "trusted_documents_only": "members"}
    )
    recorder = Recorder(create_app(runtime=rt))
    sock = loopback_socket()

    async with serving(recorder, sock):
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/graphql"
        # when the member goes through the pages
        signed_in = await drive(portal, url, "signIn", username="member", password=member.password)
        token = signed_in["token"]
        previewed = await drive(portal, url, "preview", token=token, code=code)
        chosen = previewed["images"][0]["id"]
        redeemed = await drive(
            portal, url, "redeem", token=token, code=code, osImageId=chosen, idempotencyKey="portal-1"
        )
        job = await claim_job(rt, "w1")
        assert job is not None
        await run_job(rt, SimulatedProvisioner(rt), LogNotifier(), job)
        cards = await drive(portal, url, "myCards", token=token)
        instances = await drive(portal, url, "myInstances", token=token)
        unlisted = await drive(portal, url, "redeem", token="not a token", code=code, idempotencyKey="x")

    # then every page worked
    assert signed_in["username"] == "member"
    assert previewed["months"] == 1
    assert [image["name"] for image in previewed["images"]] == [
        "CentOS 7.9 x64",
        "Ubuntu 22.04 x64",
        "Windows Server 2019 x64",
    ]
    assert set(redeemed) == {"orderId", "orderNo"}
    assert cards["total"] == 1
    assert [(row["orderNo"], row["status"], row["card"][-4:]) for row in cards["rows"]] == [
        (redeemed["orderNo"], "ACTIVE", code.replace("-", "")[-4:])
    ]
    assert len(instances) == 1
    assert instances[0]["address"].startswith("198.51.100.")
    assert unlisted == {"thrown": "ApiError", "code": "UNAUTHENTICATED", "message": "Sign in first."}
    # and no request carried a document's text: each named its document by the manifest's hash
    hashes = {f"sha256:{digest}" for digest in load_manifest(manifest)}
    named = []
    for request in recorder.requests:
        if request["method"] == "GET":
            assert "query=" not in request["query_string"]
            named.append(request["query_string"].split("documentId=")[1].split("&")[0].replace("%3A", ":"))
        else:
            assert "query" not in request["body"]
            named.append(request["body"]["documentId"])
    assert [request["method"] for request in recorder.requests] == [
        "POST",
        "GET",
        "POST",
        "GET",
        "GET",
        "POST",
    ]
    assert set(named) <= hashes
