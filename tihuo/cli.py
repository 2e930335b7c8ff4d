"""The `tihuo` command line: serve, worker, migrate, catalog load, users create / passwd / disable /
enable, export-schema."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import func, select

from core.settings import Settings, SettingsError, load_settings
from models import Role, User
from services.runtime import Runtime
from tihuo.migrate import migrate
from tihuo.preflight import (
    StartupError,
    check_data_dir,
    check_database,
    check_port_free,
    one_line,
    os_reason,
)

if TYPE_CHECKING:
    from services.errors import InvalidInput

T = TypeVar("T")
DEMO_USERS = (("admin", Role.ADMIN, "13800000001"), ("member", Role.MEMBER, "13800000002"))


async def _runtime(settings: Settings, *, need_migrated: bool = True) -> Runtime:
    """The runtime, once its database is known to answer, take writes and (by default) be migrated;
    otherwise a StartupError saying which of these it is not."""
    # without tihuo.app: the commands need no GraphQL schema
    from core.db import database_from_settings
    from core.keys import Keys

    rt = Runtime(
        db=database_from_settings(settings), settings=settings, keys=Keys.from_secret(settings.secret)
    )
    try:
        await check_database(rt.db, need_migrated=need_migrated)
    except BaseException:
        await rt.db.dispose()
        raise
    return rt


async def _migrate(settings: Settings) -> None:
    rt = await _runtime(settings, need_migrated=False)
    try:
        await migrate(rt.db.write_engine)
    finally:
        await rt.db.dispose()


async def _load_catalog_text(settings: Settings, text: str) -> str:
    from services.catalog_loading import load_catalog_text

    rt = await _runtime(settings)
    try:
        report = await load_catalog_text(rt.db, text)
    finally:
        await rt.db.dispose()
    return report.summary()


async def _set_up_demo(settings: Settings) -> list[tuple[str, str]]:
    """On a database with no users: load the demo catalog and make a demo admin and member."""
    from services.accounts import create_user
    from services.catalog_loading import demo_catalog_text, load_catalog_text

    rt = await _runtime(settings)
    try:
        async with rt.db.read() as session:
            if await session.scalar(select(func.count()).select_from(User)):
                return []
        await load_catalog_text(rt.db, demo_catalog_text())
        made = []
        for username, role, phone in DEMO_USERS:
            password = secrets.token_urlsafe(12)
            await create_user(rt, username=username, password=password, role=role, phone=phone)
            made.append((username, password))
        return made
    finally:
        await rt.db.dispose()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from tihuo.app import create_app
    from tihuo.observability import configure_logging

    # before anything is announced or changed: the port is what a newcomer most often has to change
    check_port_free(args.host, args.port)
    configure_logging(settings.log_level)
    asyncio.run(_migrate(settings))
    if args.demo:
        made = asyncio.run(_set_up_demo(settings))
        if made:
            print("Demo catalog loaded. Demo accounts (passwords are shown only this once):")
            for username, password in made:
                print(f"  {username:<8} {password}")
        else:
            print("Demo: the database already has users; nothing was added.")
    here = f"http://{args.host}:{args.port}/"
    if settings.public_url is None:
        # download links name this server as it was started, never the client's Host header
        settings = settings.model_copy(update={"public_url": here})
    print(f"GraphQL (GraphiQL in a browser): {here}graphql", flush=True)
    uvicorn.run(
        create_app(settings, start_worker=True),
        host=args.host,
        port=args.port,
        log_config=None,
        # forwarded headers are the app's business (TIHUO_FORWARDED_ALLOW_IPS), so uvicorn trusts none
        proxy_headers=False,
        access_log=False,
        # a live order's messages are a few hundred bytes: compressing them saves nothing, and each
        # connection's zlib state would cost ~100 KB of memory (bench/live.py)
        ws_per_message_deflate=False,
    )
    return 0


async def _work(settings: Settings) -> None:
    from services.notifiers import notifier_from_settings
    from services.provisioners import provisioner_from_settings
    from services.worker import default_worker_id, run_worker

    rt = await _runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        # run_worker closes the provisioner's and notifier's connections as it returns
        await run_worker(
            rt,
            provisioner_from_settings(rt),
            notifier_from_settings(rt),
            worker_id=default_worker_id(),
            stop=stop,
            poll_seconds=settings.worker_poll_seconds,
        )
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await rt.db.dispose()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from tihuo.observability import configure_logging

    configure_logging(settings.log_level)
    if settings.worker_metrics_port is not None:
        # a worker alone has no web server: its provisioning metrics get one of their own
        from prometheus_client import start_http_server

        from services.metrics import REGISTRY

        host, port = settings.worker_metrics_host, settings.worker_metrics_port
        try:
            start_http_server(port, addr=host, registry=REGISTRY)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port} for the worker's metrics (TIHUO_WORKER_METRICS_HOST, "
                f"TIHUO_WORKER_METRICS_PORT): {os_reason(exc)}"
            ) from None
    asyncio.run(_work(settings))
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(_migrate(settings))
    print("database is at the latest version")
    return 0


def cmd_catalog_load(args: argparse.Namespace, settings: Settings) -> int:
    from services.catalog_file import CatalogError

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        print(f"{args.file}: not UTF-8 text (byte 0x{byte:02x} at position {exc.start})", file=sys.stderr)
        return 1
    try:
        report = asyncio.run(_load_catalog_text(settings, text))
    except CatalogError as exc:
        print(f"{args.file}: not loaded; nothing was changed:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(report)
    return 0


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    from services.accounts import create_user
    from services.errors import InvalidInput

    if not args.password_stdin:
        print("give the password on standard input with --password-stdin", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\r\n")

    async def run() -> None:
        rt = await _runtime(settings)
        try:
            await create_user(
                rt, username=args.username, password=password, role=Role(args.role.upper()), phone=args.phone
            )
        finally:
            await rt.db.dispose()

    try:
        asyncio.run(run())
    except InvalidInput as exc:
        _print_problems(exc)
        return 1
    print(f"user {args.username} created ({args.role.lower()})")
    return 0


def _print_problems(exc: InvalidInput) -> None:
    for problem in exc.problems:
        print(f"{problem.field}: {problem.key} {problem.params or ''}".rstrip(), file=sys.stderr)


def _run_on_user(settings: Settings, username: str, change: Callable[[Any], Awaitable[T]]) -> T | None:
    """`change(runtime)` on the configured database; None, with one line on stderr, when there is no
    user named `username`."""
    from services.errors import NotFound

    async def run() -> T:
        rt = await _runtime(settings)
        try:
            return await change(rt)
        finally:
            await rt.db.dispose()

    try:
        return asyncio.run(run())
    except NotFound:
        print(f"no user named {username}", file=sys.stderr)
        return None


def cmd_users_passwd(args: argparse.Namespace, settings: Settings) -> int:
    from services.accounts import set_password
    from services.errors import InvalidInput

    if not args.password_stdin:
        print("give the new password on standard input with --password-stdin", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        done = _run_on_user(
            settings, args.username, lambda rt: set_password(rt, username=args.username, password=password)
        )
    except InvalidInput as exc:
        _print_problems(exc)
        return 1
    if done is None:
        return 1
    print(f"password of {args.username} changed; the user's earlier tokens no longer work")
    return 0


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> int:
    from services.accounts import disable_user

    changed = _run_on_user(settings, args.username, lambda rt: disable_user(rt, username=args.username))
    if changed is None:
        return 1
    if changed:
        print(f"user {args.username} disabled; the user's earlier tokens no longer work")
    else:
        print(f"user {args.username} was already disabled")
    return 0


def cmd_users_enable(args: argparse.Namespace, settings: Settings) -> int:
    from services.accounts import enable_user

    changed = _run_on_user(settings, args.username, lambda rt: enable_user(rt, username=args.username))
    if changed is None:
        return 1
    if changed:
        print(f"user {args.username} enabled; tokens from before the disabling stay invalid")
    else:
        print(f"user {args.username} was not disabled")
    return 0


def cmd_export_schema(args: argparse.Namespace, settings: Settings | None) -> int:
    from schema.root import build_schema

    sys.stdout.write(build_schema().as_str() + "\n")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tihuo", description="Pickup cards for cloud hosting: the GraphQL service."
    )
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="migrate, then serve GraphQL at /graphql")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    serve.add_argument("--port", type=_port, default=8000, help="TCP port to listen on (default 8000)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="on a database with no users: load the demo catalog and make a demo admin and member "
        "(their passwords are printed once)",
    )
    serve.set_defaults(run=cmd_serve)

    commands.add_parser(
        "worker", help="run a provisioning worker alone (more machines); stops on SIGINT or SIGTERM"
    ).set_defaults(run=cmd_worker)

    commands.add_parser("migrate", help="bring the database to the latest version").set_defaults(
        run=cmd_migrate
    )

    catalog = commands.add_parser("catalog", help="the product catalog").add_subparsers(
        dest="action", required=True
    )
    load = catalog.add_parser("load", help="validate a catalog TOML file completely, then load it")
    load.add_argument("file", help="the catalog TOML file (UTF-8); see tests/fixtures/catalog.toml")
    load.set_defaults(run=cmd_catalog_load)

    users = commands.add_parser("users", help="accounts").add_subparsers(dest="action", required=True)
    create = users.add_parser("create", help="create an admin or a member")
    create.add_argument("--username", required=True, help="the new user's sign-in name")
    create.add_argument(
        "--role",
        required=True,
        choices=["admin", "member", "ADMIN", "MEMBER"],
        help="admin (the dashboard) or member (redeems cards)",
    )
    create.add_argument("--phone", help="mobile number for the provisioning SMS (optional)")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (required: never on the command line)",
    )
    create.set_defaults(run=cmd_users_create)
    passwd = users.add_parser(
        "passwd", help="set a user's password; every token issued to the user before stops working"
    )
    passwd.add_argument("--username", required=True, help="the user's sign-in name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the new password from standard input"
    )
    passwd.set_defaults(run=cmd_users_passwd)
    disable = users.add_parser(
        "disable", help="stop a user from signing in; every token issued to the user before stops working"
    )
    disable.add_argument("--username", required=True, help="the user's sign-in name")
    disable.set_defaults(run=cmd_users_disable)
    enable = users.add_parser(
        "enable", help="let a disabled user sign in again (tokens from before the disabling stay invalid)"
    )
    enable.add_argument("--username", required=True, help="the user's sign-in name")
    enable.set_defaults(run=cmd_users_enable)

    commands.add_parser("export-schema", help="print the GraphQL SDL").set_defaults(
        run=cmd_export_schema, no_settings=True
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "no_settings", False):
        return args.run(args, None)
    try:
        settings = load_settings()
        check_data_dir(settings)
        return args.run(args, settings)
    except (SettingsError, StartupError) as exc:
        # a set-up the program cannot work with: one line, no traceback
        print(one_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
