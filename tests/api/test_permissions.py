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


def _root_fields() -> list[tuple[str, str, Audience]]:
    found = []
    for root in (SCHEMA._schema.query_type, SCHEMA._schema.mutation_type):
        assert root is not None
        for name, field in root.fields.items():
            definition = field.extensions["strawberry-definition"]
            found.append((root.name, name, definition.metadata.get(AUDIENCE)))
    return found


def _document(root: str, name: str) -> tuple[str, dict[str, Any]]:
    parent = SCHEMA._schema.query_type if root == "Query" else SCHEMA._schema.mutation_type
    field = parent.fields[name]
    required = {arg: spec for arg, spec in field.args.items() if isinstance(spec.type, GraphQLNonNull)}
    declared = "".join(f"${arg}: {spec.type} " for arg, spec in required.items())
    passed = ", ".join(f"{arg}: ${arg}" for arg in required)
    selection = "" if isinstance(get_named_type(field.type), GraphQLScalarType) else " { __typename }"
    operation = "query" if root == "Query" else "mutation"
    header = f"({declared})" if declared else ""
    call = f"({passed})" if passed else ""
    return f"{operation} {header} {{ {name}{call}{selection} }}", {
        a: _value(s.type) for a, s in required.items()
    }


ROOT_FIELDS = _root_fields()


def test_every_operation_declares_its_audience_and_says_it_in_its_description():
    undeclared = [f"{root}.{name}" for root, name, audience in ROOT_FIELDS if audience is None]
    assert undeclared == []
    for root, name, audience in ROOT_FIELDS:
        parent = SCHEMA._schema.query_type if root == "Query" else SCHEMA._schema.mutation_type
        description = parent.fields[name].description
        assert description.endswith(NOTES[audience]) or name == "order", (name, description)
    # object fields only admins may read say so too
    assert isinstance(SCHEMA._schema.type_map["CardBatch"], GraphQLObjectType)
    assert SCHEMA._schema.type_map["CardBatch"].fields["quantity"].description.endswith("Admin.")


@pytest.mark.parametrize(
    ("root", "name", "audience"), ROOT_FIELDS, ids=[f"{r}.{n}" for r, n, _ in ROOT_FIELDS]
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
