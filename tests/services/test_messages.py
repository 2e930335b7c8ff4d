"""Every message exists in both languages, and Accept-Language picks between them."""

from __future__ import annotations

import pytest

from core.messages import LOCALES, MESSAGES, pick_locale, render
from services.errors import ErrorCode


def test_every_error_code_has_a_message_in_each_language():
    missing = [
        (code.value, locale)
        for code in ErrorCode
        for locale in LOCALES
        if locale not in MESSAGES.get(code.value, {})
    ]
    assert missing == []


def test_every_message_key_is_translated():
    assert {key: sorted(entry) for key, entry in MESSAGES.items() if sorted(entry) != sorted(LOCALES)} == {}


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, "zh-CN"),
        ("", "zh-CN"),
        ("en", "en"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR, en;q=0.5", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en;q=0.2, zh;q=0.8", "zh-CN"),
        ("de", "zh-CN"),
        ("en;q=bogus", "zh-CN"),
    ],
)
def test_accept_language_picks_the_best_supported_language(header, locale):
    assert pick_locale(header) == locale


def test_a_specific_key_falls_back_to_its_code_and_fills_parameters():
    assert (
        render("RATE_LIMITED", "en", retry_after_seconds=30) == "Too many attempts; try again in 30 seconds."
    )
    assert render("CARD_USED.anything", "zh-CN") == "提货卡已使用。"
