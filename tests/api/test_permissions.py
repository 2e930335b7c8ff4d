"""Every operation declares its audience on its field (schema.permissions.guarded), and each role gets
exactly what that declaration says: signed out, as a member, as an admin. New fields are covered
without a line of this file changing: arguments are made up from their types."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLType,
    Undefined,
    get_named_type,
)

from schema.permissions import AUDIENCE
from schema.root import build_schema
from services.access import NOTES, Audience
from tests.live.conftest import connect, serving
from tests.provisioning_helpers import place_order

SCHEMA = build_schema()
SCALARS = {
    "ID": "1",
    "String": "x",
    "Int": 1,
    "Float": 1.0,
    "Boolean": False,
    "Date": "2099-12-31",
    "DateTime": "2099-12-31T00:00:00+00:00",
    "Decimal": "1.00",
}
# what each role gets from a field of each audience: the top-level code, or None (allowed)
EXPECTED = {
    Audience.ANYONE: {"anonymous": None, "member": None, "admin": None},
    Audience.SIGNED_IN: {"anonymous": "UNAUTHENTICATED", "member": None, "admin": None},
    Audience.MEMBER: {"anonymous": "UNAUTHENTICATED", "member": None, "admin": "FORBIDDEN"},
    Audience.ADMIN: {"anonymous": "UNAUTHENTICATED", "member": "FORBIDDEN", "admin": None},
}


def _value(type_: GraphQLType) -> Any:
    if isinstance(type_, GraphQLNonNull):
        return _value(type_.of_type)
    if isinstance(type_, GraphQLList):
        return []
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return {
            name: _value(field.type)
            for name, field in type_.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
        }
    assert isinstance(type_, GraphQLScalarType)
    return SCALARS[type_.name]


def _roots() -> dict[str, GraphQLObjectType]:
    schema = SCHEMA._schema
    roots = (schema.query_type, schema.mutation_type, schema.subscription_type)
    return {root.name: root for root in roots if root is not None}


ROOTS = _roots()
OPERATIONS = {"Query": "query", "Mutation": "mutation", "Subscription": "subscription"}


def _root_fields() -> list[tuple[str, str, Audience]]:
    found = []
    for root in ROOTS.values():
        assert root is not None
        for name, field in root.fields.items():
            definition = field.extensions["strawberry-definition"]
            found.append((root.name, name, definition.metadata.get(AUDIENCE)))
    return found


def _document(root: str, name: str) -> tuple[str, dict[str, Any]]:
    field = ROOTS[root].fields[name]
    required = {arg: spec for arg, spec in field.args.items() if isinstance(spec.type, GraphQLNonNull)}
    declared = "".join(f"${arg}: {spec.type} " for arg, spec in required.items())
    passed = ", ".join(f"{arg}: ${arg}" for arg in required)
    selection = "" if isinstance(get_named_type(field.type), GraphQLScalarType) else " { __typename }"
    operation = OPERATIONS[root]
    header = f"({declared})" if declared else ""
    call = f"({passed})" if passed else ""
    return f"{operation} {header} {{ {name}{call}{selection} }}", {
        a: _value(s.type) for a, s in required.items()
    }


ROOT_FIELDS = _root_fields()
# subscriptions are not run over HTTP: their walk goes over a WebSocket (below)
HTTP_FIELDS = [(root, name, audience) for root, name, audience in ROOT_FIELDS if root != "Subscription"]
LIVE_FIELDS = [(name, audience) for root, name, audience in ROOT_FIELDS if root == "Subscription"]


def test_every_operation_declares_its_audience_and_says_it_in_its_description():
    undeclared = [f"{root}.{name}" for root, name, audience in ROOT_FIELDS if audience is None]
    assert undeclared == []
    assert {name for name, _ in LIVE_FIELDS} == {"orderUpdates", "myOrderUpdates"}
    for root, name, audience in ROOT_FIELDS:
        description = ROOTS[root].fields[name].description
        noted = name in ("order", "orderUpdates")  # "Admins see any; a member only their own"
        assert description.endswith(NOTES[audience]) or noted, (name, description)
    # object fields only admins may read say so too
    assert isinstance(SCHEMA._schema.type_map["CardBatch"], GraphQLObjectType)
    assert SCHEMA._schema.type_map["CardBatch"].fields["quantity"].description.endswith("Admin.")


@pytest.mark.parametrize(
    ("root", "name", "audience"), HTTP_FIELDS, ids=[f"{r}.{n}" for r, n, _ in HTTP_FIELDS]
)
async def test_each_role_gets_what_the_declared_audience_says(gql, member, admin, root, name, audience):
    document, variables = _document(root, name)

    answers = {
        role: await gql(document, variables, user=user)
        for role, user in (("anonymous", None), ("member", member), ("admin", admin))
    }

    for role, expected in EXPECTED[audience].items():
        codes = [
            error["extensions"]["code"]
            for error in answers[role].get("errors", [])
            if error["extensions"]["code"] in ("UNAUTHENTICATED", "FORBIDDEN")
        ]
        assert codes == ([expected] if expected else []), (role, document, answers[role])


def test_the_order_fields_of_the_platform_say_who_sees_them():
    order = SCHEMA._schema.type_map["Order"]
    assert isinstance(order, GraphQLObjectType)
    assert order.fields["externalTaskId"].description.endswith("Admin.")
    assert order.fields["provisioningAttempts"].description.endswith("Admin; empty for anyone else.")
    for name in ("externalTaskId", "provisioningAttempts"):
        assert order.fields[name].extensions["strawberry-definition"].metadata[AUDIENCE] is Audience.ADMIN


@pytest.mark.usefixtures("catalog")
async def test_a_member_reading_their_order_gets_no_task_and_no_attempts_an_admin_both(
    gql, rt, member, admin
):
    from tests.provisioning_helpers import place_order

    placed = await place_order(rt, member.id)
    document = "query ($id: ID!) { order(id: $id) { externalTaskId provisioningAttempts { number } } }"

    as_member = await gql(document, {"id": str(placed.order_id)}, user=member)
    as_admin = await gql(document, {"id": str(placed.order_id)}, user=admin)

    assert as_member["data"] == {"order": {"externalTaskId": None, "provisioningAttempts": []}}
    assert [(e["path"], e["extensions"]["code"]) for e in as_member["errors"]] == [
        (["order", "externalTaskId"], "FORBIDDEN")
    ]
    assert as_admin == {"data": {"order": {"externalTaskId": None, "provisioningAttempts": []}}}


@pytest.mark.usefixtures("catalog")
@pytest.mark.parametrize(("name", "audience"), LIVE_FIELDS, ids=[name for name, _ in LIVE_FIELDS])
async def test_each_role_gets_what_a_subscriptions_audience_says(rt, member, admin, name, audience):
    # an order of the member's for the ids, so a member's own subscription is allowed
    placed = await place_order(rt, member.id)
    document, variables = _document("Subscription", name)
    variables = {
        arg: str(placed.order_id) if value == SCALARS["ID"] else value for arg, value in variables.items()
    }
    async with serving(rt) as live:
        for role, user in (("anonymous", None), ("member", member), ("admin", admin)):
            async with connect(live, user.token if user else None) as client:
                await client.subscribe("1", document, variables)
                try:
                    message = await client.receive(0.5)
                except TimeoutError:
                    message = {"type": "waiting"}  # allowed: no change to tell yet
            errors = (
                message["payload"]
                if message["type"] == "error"
                else message.get("payload", {}).get("errors", [])
            )
            codes = [error["extensions"]["code"] for error in errors]
            expected = EXPECTED[audience][role]
            assert codes == ([expected] if expected else []), (role, document, message)
            assert message["type"] in (("error",) if expected else ("next", "waiting")), (role, message)
