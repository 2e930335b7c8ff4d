"""The notifiers that tell the member their product is open (RULES §5): the SMS text, the log stand-in
for development, the http one (a signed POST to the SMS gateway), and the choice from the settings.

The text carries the login password: it is blanked out of every log line and never echoed back.
"""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from core.messages import product_name
from core.settings import Settings
from models import ProductType
from services.runtime import Runtime
from services.signed_http import SignedClient, redact

notify_log = logging.getLogger("tihuo.notify")


class Notifier(Protocol):
    async def send_sms(self, phone: str | None, text: str, *, secret: str) -> None:
        """Send `text` to `phone`; `secret` is the login password inside `text`, never to be logged."""
        ...

    async def aclose(self) -> None:
        """Let go of what the notifier holds (connections); the worker calls it as it stops."""
        ...


class NotificationFailed(Exception):
    """The SMS gateway did not take the message (the product is open all the same)."""


def mask_phone(phone: str | None) -> str:
    """138****0001: enough to tell numbers apart in a log, not enough to call one."""
    if not phone:
        return "(no phone)"
    if len(phone) < 7:
        return "****"
    return f"{phone[:3]}****{phone[-4:]}"


def sms_text(product_type: ProductType, ip_address: str | None, password: str) -> str:
    parts = [f"【tihuo】您的{product_name(ProductType(product_type))}已开通"]
    if ip_address:
        parts.append(f"IP：{ip_address}")
    parts.append(f"登录密码：{password}")
    return "，".join(parts) + "，请登录后及时修改密码。"


class LogNotifier:
    """A development stand-in: logs the SMS with the phone masked and the password blanked out."""

    async def send_sms(self, phone: str | None, text: str, *, secret: str) -> None:
        notify_log.info(
            "SMS to %s: %s", mask_phone(phone), redact(text, secret), extra={"event": "notify.sms"}
        )

    async def aclose(self) -> None:
        """Holds nothing."""


class HttpNotifier:
    """POSTs {"phone", "text"} to TIHUO_NOTIFIER_URL, signed like the provisioner's requests, over one
    kept client."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.notifier_url and settings.notifier_secret):
            raise ValueError("the http notifier needs TIHUO_NOTIFIER_URL and TIHUO_NOTIFIER_SECRET")
        self.http = SignedClient(
            settings.notifier_url, settings.notifier_secret, settings.provision_timeout_seconds
        )

    async def send_sms(self, phone: str | None, text: str, *, secret: str) -> None:
        if not phone:
            notify_log.warning("SMS not sent: the member has no phone", extra={"event": "notify.no_phone"})
            return
        try:
            response = await self.http.post({"phone": phone, "text": text})
        except httpx.HTTPError as exc:
            raise NotificationFailed(f"SMS gateway unreachable: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            # no body excerpt: a gateway may echo the text, and the text holds the password
            raise NotificationFailed(f"SMS gateway answered HTTP {response.status_code}")

    async def aclose(self) -> None:
        await self.http.aclose()


def notifier_from_settings(rt: Runtime) -> Notifier:
    if rt.settings.notifier == "http":
        return HttpNotifier(rt.settings)
    return LogNotifier()
