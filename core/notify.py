"""Change notices inside one process, and across processes through PostgreSQL's LISTEN/NOTIFY.

A `Hub` fans notices out to the `Inbox`es subscribed to their keys. An inbox holds at most `limit`
notices: a reader that falls further behind is not queued for without bound, it is told once
that it missed some (`MISSED`) and reads what it watches again. `Listener` keeps ONE asyncpg
connection per process LISTENing on a channel, hands each payload to a callback and, whenever it
has (again) made the connection (notices may have been sent while there was none), says so, so
every inbox can be marked as having missed some.

Knows nothing of what the notices mean: the services give the keys and read the payloads.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import asyncpg

log = logging.getLogger("tihuo.notify")


class _Missed:
    def __repr__(self) -> str:
        return "MISSED"


# what an inbox gives instead of its notices once it overflowed (or the listener reconnected)
MISSED: Any = _Missed()


class Inbox:
    """One reader's bounded queue of notices."""

    def __init__(self, hub: Hub, keys: tuple[Hashable, ...], limit: int) -> None:
        self._hub = hub
        self.keys = keys
        self._limit = limit
        self._items: deque[object] = deque()
        self._missed = False
        self._ready = asyncio.Event()

    def put(self, notice: object) -> None:
        if self._missed:
            return
        if len(self._items) >= self._limit:
            self.missed()
            return
        self._items.append(notice)
        self._ready.set()

    def missed(self) -> None:
        """Forget the queued notices: the reader is to read what it watches again."""
        self._items.clear()
        self._missed = True
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, within: float | None = None) -> object | None:
        """The next notice, MISSED, or None after `within` seconds without either."""
        if not self._items and not self._missed:
            self._ready.clear()
            try:
                async with asyncio.timeout(within):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self._missed:
            self._missed = False
            return MISSED
        return self._items.popleft()

    def close(self) -> None:
        self._hub._remove(self)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Hub:
    """Inboxes by key; a notice published under several keys reaches each inbox once."""

    def __init__(self) -> None:
        self._by_key: dict[Hashable, set[Inbox]] = {}

    def subscribe(self, keys: Iterable[Hashable], limit: int) -> Inbox:
        inbox = Inbox(self, tuple(keys), limit)
        for key in inbox.keys:
            self._by_key.setdefault(key, set()).add(inbox)
        return inbox

    def publish(self, keys: Iterable[Hashable], notice: object) -> None:
        reached: set[Inbox] = set()
        for key in keys:
            reached.update(self._by_key.get(key, ()))
        for inbox in reached:
            inbox.put(notice)

    def all_missed(self) -> None:
        """Every inbox reads again (notices may have been lost, e.g. while a listener reconnected)."""
        for inboxes in self._by_key.values():
            for inbox in inboxes:
                inbox.missed()

    def __len__(self) -> int:
        return len({inbox for inboxes in self._by_key.values() for inbox in inboxes})

    def backlog(self, key: Hashable) -> list[int]:
        """How many notices each inbox subscribed to `key` has waiting."""
        return sorted(len(inbox) for inbox in self._by_key.get(key, ()))

    def _remove(self, inbox: Inbox) -> None:
        for key in inbox.keys:
            inboxes = self._by_key.get(key)
            if inboxes is not None:
                inboxes.discard(inbox)
                if not inboxes:
                    del self._by_key[key]


class Listener:
    """One dedicated asyncpg connection LISTENing on `channel`, made again whenever it is lost.

    `on_payload` is called with each notification's payload on the event loop; `on_connected`
    each time LISTEN is in place (again): what was sent while nobody listened is lost."""

    def __init__(
        self,
        connect: Callable[[], Any],
        channel: str,
        on_payload: Callable[[str], None],
        on_connected: Callable[[], None],
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._on_payload = on_payload
        self._on_connected = on_connected
        self._retry_seconds = retry_seconds
        # set while LISTEN is in place (start-up waits for it); how often it had to connect again
        self.listening = asyncio.Event()
        self.reconnects = 0

    def _received(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_payload(payload)
        except Exception:
            log.exception("a notice could not be handed on: %r", payload[:200])

    async def run(self) -> None:
        """Until cancelled: connect, LISTEN, wait for the connection to end, connect again."""
        connected_before = False
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await self._connect()
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _, lost=lost: lost.set())
                await connection.add_listener(self._channel, self._received)
                self.listening.set()
                self.reconnects += connected_before
                connected_before = True
                self._on_connected()
                await lost.wait()
                log.warning(
                    "the notice connection was lost; connecting again", extra={"event": "notify.lost"}
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("notice connection failed: %s", error, extra={"event": "notify.failed"})
            finally:
                self.listening.clear()
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            await asyncio.sleep(self._retry_seconds)
