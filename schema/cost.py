"""What a document costs to answer, counted before it runs (RULES-v2 §7): every field 1; a field with a
`first` argument multiplies what lies below it by `first`; any other list by LIST_SIZE (the
connections' own `edges` and `nodes` excepted: their `first` counted already); nested lists
multiply. Introspection fields count like any other. Unions and interfaces count every branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    BREAK,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    Visitor,
    get_named_type,
    get_nullable_type,
    visit,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

# what a list without `first` is taken to hold (the catalog's lists, introspection's)
LIST_SIZE = 10
META_FIELDS = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef, "__typename": TypeNameMetaFieldDef}


@dataclass(frozen=True)
class Cost:
    """A document's cost, and whether it depends on the variables (a `first: $n`)."""

    value: int
    uses_variables: bool


class _Counter:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, variables: Mapping[str, Any]) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.uses_variables = False

    def selections(
        self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType, seen: frozenset[str]
    ) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, seen)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, target or parent, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:  # validation refuses both; never loop
                    continue
                target = self.schema.get_type(fragment.type_condition.name.value) or parent
                total += self.selections(fragment.selection_set, target, seen | {name})
        return total

    def field(self, node: FieldNode, parent: GraphQLNamedType, seen: frozenset[str]) -> int:
        name = node.name.value
        definition: GraphQLField | None = META_FIELDS.get(name)
        if definition is None:
            # object and interface types have fields; a union only __typename (above)
            fields = getattr(parent, "fields", None)
            definition = fields.get(name) if fields else None
        if definition is None:  # validation refuses unknown fields; count it and go on
            return 1
        below = self.selections(node.selection_set, get_named_type(definition.type), seen)
        return self.multiplier(node, definition, parent) * (1 + below)

    def multiplier(self, node: FieldNode, definition: GraphQLField, parent: GraphQLNamedType) -> int:
        if "first" in definition.args:
            return max(1, self.first(node, definition))
        if isinstance(get_nullable_type(definition.type), GraphQLList):  # type: ignore[arg-type]
            return 1 if parent.name.endswith("Connection") else LIST_SIZE
        return 1

    def first(self, node: FieldNode, definition: GraphQLField) -> int:
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return int(value.value)
            if isinstance(value, VariableNode):
                self.uses_variables = True
                given = self.variables.get(value.name.value)
                if isinstance(given, int) and not isinstance(given, bool):
                    return given
            break
        default = definition.args["first"].default_value
        return default if isinstance(default, int) else LIST_SIZE


def document_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> Cost:
    """The cost of the operation that will run (the named one, else the only one)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [d for d in operations if d.name is not None and d.name.value == operation_name]
    if len(operations) != 1:
        return Cost(0, uses_variables=False)  # Strawberry refuses the request before it runs
    [operation] = operations
    root = schema.get_root_type(operation.operation)
    if root is None:
        return Cost(0, uses_variables=False)
    counter = _Counter(schema, document, variables or {})
    value = counter.selections(operation.selection_set, root, frozenset())
    return Cost(value, counter.uses_variables)


def is_introspection_only(document: DocumentNode, operation_name: str | None) -> bool:
    """Every root field of the operation is __schema, __type or __typename."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}

    def only_meta(selection_set: SelectionSetNode, depth: int) -> bool:
        if depth > 20:
            return False
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value not in META_FIELDS:
                    return False
            elif isinstance(selection, InlineFragmentNode):
                if not only_meta(selection.selection_set, depth + 1):
                    return False
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is None or not only_meta(fragment.selection_set, depth + 1):
                    return False
        return True

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None
            or (definition.name is not None and definition.name.value == operation_name)
        ):
            return only_meta(definition.selection_set, 0)
    return False


def asks_for_schema(document: DocumentNode) -> bool:
    """The document names __schema or __type anywhere (not merely __typename)."""

    class Finder(Visitor):
        found = False

        def enter_field(self, node: FieldNode, *_: Any) -> Any:
            if node.name.value in ("__schema", "__type"):
                self.found = True
                return BREAK
            return None

    finder = Finder()
    visit(document, finder)
    return finder.found
