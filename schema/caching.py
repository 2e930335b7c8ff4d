"""Which answers a cache may keep. A query whose root fields are all catalog reads (declared once on
the field: `guarded(..., catalog=True)`) answers the same to every signed-in user and changes only
when the catalog is loaded again, so the asker's own cache may keep it briefly; every other answer
is someone's private data (a member's orders, an admin's cards) and is never kept."""

from __future__ import annotations

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_operation_ast,
)

CATALOG = "catalog"  # where `guarded(..., catalog=True)` marks a field in its metadata
_NESTING = 10  # fragments nest no deeper in any document the limits let through


def catalog_fields(schema: GraphQLSchema) -> frozenset[str]:
    """The Query fields marked as catalog reads."""
    assert schema.query_type is not None
    return frozenset(
        name
        for name, field in schema.query_type.fields.items()
        if field.extensions["strawberry-definition"].metadata.get(CATALOG)
    )


def catalog_only(document: DocumentNode, operation_name: str | None, catalog: frozenset[str]) -> bool:
    """Whether the operation run is a query whose every root field (through fragments) is one of
    `catalog` or `__typename`; fields a directive may skip count as asked, so the answer errs on
    the side of not caching."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.QUERY:
        return False
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    return _only(operation.selection_set, fragments, catalog | {"__typename"}, 0)


def _only(
    selections: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    allowed: frozenset[str],
    depth: int,
) -> bool:
    if depth > _NESTING:
        return False
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value not in allowed:
                return False
        elif isinstance(selection, InlineFragmentNode):
            if not _only(selection.selection_set, fragments, allowed, depth + 1):
                return False
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is None or not _only(fragment.selection_set, fragments, allowed, depth + 1):
                return False
    return True
