"""Request metrics for GraphQL: one count and one latency sample per operation, by its first root
field and outcome (services.metrics owns the metric objects)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.exception_handlers import get_error_type, get_exception_types
from strawberry.types.execution import PreExecutionError

from services import metrics


@dataclass
class _Outcome:
    business_error: bool = False


# the operation being executed; resolvers run in tasks that copy the context, so they share the object
_current: ContextVar[_Outcome | None] = ContextVar("graphql_outcome", default=None)


class MarksBusinessErrors:
    """Wraps an exception handler: a domain exception it turns into a union member implementing
    Error makes the operation's outcome `business_error`. Cheaper than a per-field extension and
    exact, which reading the result is not (a client need not select `__typename`)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.exception_type = get_exception_types(handler)
        self.error_type = get_error_type(handler)

    def handle(self, exception: Exception, *, field: Any, info: Any) -> Any:
        handled = self.handler.handle(exception, field=field, info=info)
        outcome = _current.get()
        if handled is not None and outcome is not None:
            outcome.business_error = True
        return handled


def marking_business_errors(handlers: Iterable[Any]) -> list[MarksBusinessErrors]:
    return [MarksBusinessErrors(handler) for handler in handlers]


class RequestMetrics(SchemaExtension):
    """Counts every operation by name and outcome (ok, business_error, error) and observes its time.
    A document that does not parse or validate is `unknown`: its names are not to be trusted."""

    def on_operation(self) -> Iterator[None]:
        started = perf_counter()
        outcome = _Outcome()
        token = _current.set(outcome)
        failed = True
        try:
            yield
            failed = False
        finally:
            _current.reset(token)
            operation, result = metrics.UNKNOWN, "error"
            executed = self.execution_context.result
            if not failed and executed is not None and not isinstance(executed, PreExecutionError):
                trusted = getattr(self.execution_context.context, "operation_label", None)
                operation = metrics.operation_label(trusted or self._operation_name())
                if not executed.errors:
                    result = "business_error" if outcome.business_error else "ok"
            metrics.graphql_request(operation, result, perf_counter() - started)

    def _operation_name(self) -> str | None:
        """The operation's first root field (`redeemCard`): a name from the schema, so a client
        cannot grow the label set with names of its own choosing (its operation name is used only
        for a document of the trusted manifest, whose names the server was given)."""
        context = self.execution_context
        document = context.graphql_document
        if document is None:
            return None
        operation = get_operation_ast(document, context.operation_name)
        if operation is None:
            return None
        return _first_field(document, operation.selection_set)


def _first_field(document: DocumentNode, selections: SelectionSetNode, depth: int = 0) -> str | None:
    if depth > 10:  # fragments nest only this deep in any request we would answer
        return None
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            return selection.name.value
        if isinstance(selection, InlineFragmentNode):
            found = _first_field(document, selection.selection_set, depth + 1)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = next(
                (
                    definition
                    for definition in document.definitions
                    if isinstance(definition, FragmentDefinitionNode)
                    and definition.name.value == selection.name.value
                ),
                None,
            )
            found = None if fragment is None else _first_field(document, fragment.selection_set, depth + 1)
        else:
            found = None
        if found is not None:
            return found
    return None
