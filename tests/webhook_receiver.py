"""A real webhook receiver for the tests: an HTTP server on loopback that verifies every request with
the `standardwebhooks` package (never with tihuo's own signing code) and answers as told: 2xx, 500,
410, or not at all (it hangs until released)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

HANG_SECONDS = 60


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and which of the receiver's secrets verified it (by index)."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: tuple[int, ...]

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")


@dataclass
class Receiver:
    """`answers` are used one per request, then `default`: "ok" (204), "500", "410" or "hang"."""

    secrets: list[str] = field(default_factory=list)
    default: str = "ok"
    answers: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def verify(self, body: bytes, headers: dict[str, str]) -> tuple[int, ...]:
        verified = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(index)
        return tuple(verified)

    def answer(self) -> str:
        return self.answers.pop(0) if self.answers else self.default

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.received.append(Received(self.path, headers, body, receiver.verify(body, headers)))
                answer = receiver.answer()
                receiver.arrived.set()
                if answer == "hang":
                    receiver.release.wait(HANG_SECONDS)
                    return
                status = {"ok": 204, "500": 500, "410": 410}[answer]
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender went away

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
