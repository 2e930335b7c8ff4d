"""Drive `tihuo serve --demo` over real HTTP the way a new user would: health, GraphiQL, login,
me, regions, a quote (the catalog's worked example) and the role checks. Standard library only.

usage: TIHUO_DEMO_LOG=serve.log python3 .ci/smoke.py http://127.0.0.1:8765
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

BASE = sys.argv[1]
LOG = os.environ["TIHUO_DEMO_LOG"]


def request(path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, str, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        BASE + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def gql(query: str, variables: dict | None = None, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, text, _ = request("/graphql", {"query": query, "variables": variables or {}}, headers)
    assert status == 200, (status, text)
    return json.loads(text)


def wait_until_up(seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, _, _ = request("/healthz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    with open(LOG, encoding="utf-8") as log:
        sys.exit(f"server did not come up; its log:\n{log.read()}")


def demo_passwords() -> dict[str, str]:
    with open(LOG, encoding="utf-8") as log:
        text = log.read()
    found = dict(re.findall(r"^\s+(admin|member)\s+(\S+)$", text, re.MULTILINE))
    assert set(found) == {"admin", "member"}, text
    return found


LOGIN = "mutation($u:String!,$p:String!){login(input:{username:$u,password:$p}){__typename ... on LoginSuccess{token viewer{username role}} ... on Error{code}}}"


def main() -> None:
    wait_until_up()
    status, text, headers = request("/healthz")
    assert json.loads(text) == {"status": "ok", "database": "ok"}, text
    assert headers.get("x-request-id"), headers

    status, html, _ = request("/graphql", headers={"Accept": "text/html"})
    assert status == 200 and "graphiql" in html.lower(), status

    passwords = demo_passwords()
    admin = gql(LOGIN, {"u": "admin", "p": passwords["admin"]})["data"]["login"]
    assert admin["__typename"] == "LoginSuccess" and admin["viewer"] == {
        "username": "admin",
        "role": "ADMIN",
    }, admin
    member = gql(LOGIN, {"u": "member", "p": passwords["member"]})["data"]["login"]
    assert member["viewer"]["role"] == "MEMBER", member
    wrong = gql(LOGIN, {"u": "admin", "p": "not the password"})["data"]["login"]
    assert wrong == {"__typename": "WrongPasswordError", "code": "WRONG_PASSWORD"}, wrong

    me = gql("{me{username role}}", token=admin["token"])
    assert me == {"data": {"me": {"username": "admin", "role": "ADMIN"}}}, me
    assert gql("{me{username}}") == {"data": {"me": None}}

    regions = gql("{regions{code lines{id code osImages{name}}}}", token=member["token"])["data"]["regions"]
    line = next(line for region in regions for line in region["lines"] if line["code"] == "sh-bgp")
    quote = (
        "query($c:ProductConfigInput!){quote(config:$c){__typename ... on Quote{linuxPrice windowsPrice monthlyLinuxPrice}"
        " ... on InvalidInputError{fieldErrors{field}}}}"
    )
    config = {
        "productType": "CLOUD_SERVER",
        "lineId": line["id"],
        "months": 1,
        "cpuCores": 1,
        "memoryGb": 1,
        "diskGb": 10,
        "bandwidthMbps": 10,
        "defenseGbps": 0,
    }
    priced = gql(quote, {"c": config}, token=admin["token"])["data"]["quote"]
    assert priced == {
        "__typename": "Quote",
        "linuxPrice": "83.66",
        "windowsPrice": "83.66",
        "monthlyLinuxPrice": "83.66",
    }, priced

    forbidden = gql(quote, {"c": config}, token=member["token"])
    assert forbidden["data"] is None and forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN", (
        forbidden
    )
    signed_out = gql(quote, {"c": config})
    assert signed_out["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", signed_out
    print(
        "smoke: healthz, GraphiQL, login, me, regions, quote 83.66, FORBIDDEN and UNAUTHENTICATED all as expected"
    )


if __name__ == "__main__":
    main()
