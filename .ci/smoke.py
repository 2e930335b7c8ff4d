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
    member_path(admin["token"], member["token"], line["id"])
    print(
        "smoke: healthz, GraphiQL, login, me, regions, quote 83.66, FORBIDDEN, UNAUTHENTICATED,"
        " and a member's card from preview to an ACTIVE instance, all as expected"
    )


CREATE = """mutation($i: CreateCardBatchInput!){createCardBatch(input:$i){__typename
  ... on CreateCardBatchSuccess{batch{id}} ... on Error{code}}}"""
DOWNLOAD = """mutation($b: ID!, $p: String!){createCardBatchDownload(batchId:$b, password:$p){
  ... on CardBatchDownload{url} ... on Error{code}}}"""
PREVIEW = """query($c: String!){redemptionPreview(code:$c){__typename
  ... on RedemptionPreview{productName osImages{id name}} ... on Error{code}}}"""
REDEEM = """mutation($i: RedeemCardInput!){redeemCard(input:$i){__typename
  ... on RedeemCardSuccess{order{id status}} ... on Error{code}}}"""
ORDER = "query($id: ID!){order(id:$id){status instance{ipAddress expiresAt}}}"


def member_path(admin_token: str, member_token: str, line_id: str) -> None:
    """F2 → F5 → F8 → F9 as people would do it: make cards, download them, redeem one, see the server."""
    config = {
        "productType": "CLOUD_SERVER",
        "lineId": line_id,
        "months": 3,
        "cpuCores": 1,
        "memoryGb": 1,
        "diskGb": 10,
        "bandwidthMbps": 10,
        "defenseGbps": 0,
    }
    batch_input = {"name": "smoke", "quantity": 2, "validUntil": "2099-12-31", "config": config}
    made = gql(CREATE, {"i": batch_input}, token=admin_token)["data"]["createCardBatch"]
    assert made["__typename"] == "CreateCardBatchSuccess", made
    link = gql(DOWNLOAD, {"b": made["batch"]["id"], "p": demo_passwords()["admin"]}, token=admin_token)
    url = link["data"]["createCardBatchDownload"]["url"]
    with urllib.request.urlopen(url, timeout=10) as response:
        codes = response.read().decode().split()
    assert len(codes) == 2, codes

    preview = gql(PREVIEW, {"c": codes[0].lower()}, token=member_token)["data"]["redemptionPreview"]
    assert preview["__typename"] == "RedemptionPreview" and preview["productName"] == "云服务器", preview
    image = preview["osImages"][0]["id"]
    redeemed = gql(REDEEM, {"i": {"code": codes[0], "osImageId": image}}, token=member_token)["data"][
        "redeemCard"
    ]
    assert redeemed["__typename"] == "RedeemCardSuccess", redeemed
    again = gql(REDEEM, {"i": {"code": codes[0], "osImageId": image}}, token=member_token)["data"][
        "redeemCard"
    ]
    assert again == {"__typename": "CardUnavailableError", "code": "CARD_USED"}, again

    order = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        order = gql(ORDER, {"id": redeemed["order"]["id"]}, token=member_token)["data"]["order"]
        if order["status"] == "ACTIVE":
            assert order["instance"]["ipAddress"], order
            return
        time.sleep(0.5)
    sys.exit(f"the order did not become ACTIVE: {order}")


if __name__ == "__main__":
    main()
