"""`tihuo serve` as a real process believes X-Forwarded-For from nobody by default, loopback included
(RULES-v2 §7): a client on the same host cannot pick its own address to escape the per-address
failed-attempt limit. With TIHUO_FORWARDED_ALLOW_IPS naming the proxy, the header counts."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import clean_env, free_port, healthy, spawn, stop

LOGIN = """mutation ($u: String!) { login(input: {username: $u, password: "not the password"}) {
  ... on Error { code } } }"""


async def _answers(settings, tmp_path: Path, **env: str) -> list[str]:
    port = free_port()
    environment = clean_env(
        TIHUO_DATABASE_URL=settings.resolved_database_url,
        TIHUO_SECRET_KEY=settings.secret_key,
        TIHUO_DATA_DIR=str(tmp_path / "serve-data"),
        TIHUO_LOG_LEVEL="WARNING",
        TIHUO_PASSWORD_MEMORY_KIB="64",
        TIHUO_PASSWORD_TIME_COST="1",
        **env,
    )
    command = [sys.executable, "-m", "tihuo.cli", "serve", "--port", str(port)]
    process = spawn(command, environment, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        await healthy(url, process, seconds=60)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answers = []
            for n in range(7):
                response = await http.post(
                    "/graphql",
                    json={"query": LOGIN, "variables": {"u": f"nobody{n}"}},
                    headers={"X-Forwarded-For": f"198.51.100.{n + 1}"},
                )
                answers.append(response.json()["data"]["login"]["code"])
        return answers
    finally:
        stop([process])


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["WRONG_PASSWORD"] * 5 + ["RATE_LIMITED"] * 2),
        ({"TIHUO_FORWARDED_ALLOW_IPS": "127.0.0.1"}, ["WRONG_PASSWORD"] * 7),
    ],
    ids=["trusted-by-default-none", "trusted-proxy"],
)
async def test_serve_believes_forwarded_for_only_from_a_trusted_proxy(settings, tmp_path, env, expected):
    assert await _answers(settings, tmp_path, **env) == expected
