"""Documents parsed, validated and costed once per text, and the schema's one extension that uses them.

Strawberry makes every extension anew for each request and runs each one's hooks through context
managers, so one extension is cheaper than the five this replaces (RequestMetrics, ParserCache,
ValidationCache, MaxTokensLimiter, AddValidationRules): measured, their hooks were 8% of a
redemption's CPU.

The cache is keyed by the text's SHA-256, keeps only texts of client size (a flood of distinct large
documents must not fill memory: RULES-v2 §7) and is bounded by the bytes its entries hold. A large
document met for the first time is parsed and validated on a thread (`DocumentCache.prepare`), so it
does not stall the event loop for everyone else. Its texts are also the store of Apollo's automatic
persisted queries (tihuo/persisted.py): a text once sent can be named by its hash alone.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse, validate
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from core.messages import DEFAULT_LOCALE, render
from schema.cost import Cost, asks_for_schema, document_cost, is_introspection_only
from schema.metrics import RequestMetrics

# documents longer than this are never kept: real clients send a few kilobytes, persisted ones less
CACHEABLE_BYTES = 64 * 1024
# what the kept documents may hold together, texts and syntax trees (measured: a tree is about 55
# bytes per character of the text it came from)
CACHE_BUDGET_BYTES = 64 * 1024 * 1024
TREE_BYTES_PER_CHARACTER = 60
# a document this long met for the first time is parsed and validated off the event loop
INLINE_BYTES = 8 * 1024


def digest_of(text: str) -> bytes:
    """The SHA-256 of a document's text, as APQ and the trusted manifests name documents."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass
class Prepared:
    """One document text: its tree (or why it does not parse), its validation errors once known,
    and its cost when that does not depend on the variables."""

    text: str
    document: DocumentNode | None
    parse_error: GraphQLError | None
    size: int
    errors: list[GraphQLError] | None = None
    schema_asked: bool = False
    by_operation: dict[str | None, Cost] = field(default_factory=dict)


class DocumentCache:
    """Prepared documents by the SHA-256 of their text, under the schema's validation rules plus
    `extra_rules` (the depth and alias limits) and at most `max_tokens` tokens."""

    def __init__(self, *, extra_rules: Sequence[type[ASTValidationRule]], max_tokens: int) -> None:
        self.extra_rules = (*extra_rules, MaybeNullValidationRule, OneOfInputValidationRule)
        self.max_tokens = max_tokens
        self._kept: LRUCache[bytes, Prepared] = LRUCache(
            maxsize=CACHE_BUDGET_BYTES, getsizeof=lambda prepared: prepared.size
        )

    @staticmethod
    def _key(query: str) -> bytes:
        return digest_of(query)

    def _parse(self, query: str) -> Prepared:
        size = len(query) * (1 + TREE_BYTES_PER_CHARACTER)
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError as error:
            return Prepared(text=query, document=None, parse_error=error, size=size)
        return Prepared(
            text=query,
            document=document,
            parse_error=None,
            size=size,
            schema_asked=asks_for_schema(document),
        )

    def _validated(
        self, schema: GraphQLSchema, prepared: Prepared, rules: Sequence[type[ASTValidationRule]]
    ) -> Prepared:
        if prepared.document is not None and prepared.errors is None:
            prepared.errors = validate(schema, prepared.document, (*rules, *self.extra_rules))
        return prepared

    def text_of(self, digest: bytes) -> str | None:
        """The kept text whose SHA-256 is `digest`, if one is kept."""
        prepared = self._kept.get(digest)
        return None if prepared is None else prepared.text

    def get(self, query: str) -> Prepared:
        """The prepared document (parsed now on a miss, on this thread)."""
        key = self._key(query)
        prepared = self._kept.get(key)
        if prepared is None:
            prepared = self._parse(query)
            self._keep(key, query, prepared)
        return prepared

    def validated(
        self, schema: GraphQLSchema, query: str, rules: Sequence[type[ASTValidationRule]]
    ) -> Prepared:
        return self._validated(schema, self.get(query), rules)

    async def prepare(
        self, schema: GraphQLSchema, query: str, rules: Sequence[type[ASTValidationRule]]
    ) -> Prepared | None:
        """Before Strawberry runs `query`: a long text not met before is parsed and validated on a
        thread, so it does not hold the event loop; the hooks then use what this returns (a text too
        long to keep is not in the cache). None when there is nothing to do ahead."""
        if len(query) < INLINE_BYTES:
            return None
        key = self._key(query)
        prepared = self._kept.get(key)
        if prepared is None:
            prepared = await asyncio.to_thread(lambda: self._validated(schema, self._parse(query), rules))
            self._keep(key, query, prepared)
        return prepared

    def _keep(self, key: bytes, query: str, prepared: Prepared) -> None:
        if len(query) <= CACHEABLE_BYTES:
            self._kept[key] = prepared


class IntrospectionLane:
    """Introspection is pure CPU work on the schema (a full GraphiQL introspection is tens of
    milliseconds) that nobody's answer waits on but the asker's. An operation made only of
    __schema, __type and __typename therefore runs on a thread, one at a time per process: the
    event loop keeps serving everyone else meanwhile (measured in bench/hostile.py), and signed-out
    clients sending it in a loop queue behind each other, not in front of the members."""

    def __init__(self) -> None:
        self._one_at_a_time: asyncio.Semaphore | None = None

    def wrap(self, execute: Callable[..., Any]) -> Callable[..., Any]:
        def run(schema: GraphQLSchema, document: DocumentNode, **kwargs: Any) -> Any:
            if not is_introspection_only(document, kwargs.get("operation_name")):
                return execute(schema, document, **kwargs)
            return self._on_thread(execute, schema, document, kwargs)

        return run

    async def _on_thread(
        self,
        execute: Callable[..., Any],
        schema: GraphQLSchema,
        document: DocumentNode,
        kwargs: dict[str, Any],
    ) -> Any:
        if self._one_at_a_time is None:
            self._one_at_a_time = asyncio.Semaphore(1)
        async with self._one_at_a_time:
            return await asyncio.to_thread(execute, schema, document, **kwargs)


class RequestHooks(RequestMetrics):
    """The schema's extension: request metrics (RequestMetrics); the document parsed, validated and
    costed through a DocumentCache shared by every request; introspection gated by setting."""

    def __init__(self, documents: DocumentCache, *, max_cost: int, introspection_signed_in: bool) -> None:
        super().__init__()
        self.documents = documents
        self.max_cost = max_cost
        self.introspection_signed_in = introspection_signed_in
        self.prepared: Prepared | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        # what the HTTP view prepared ahead (tihuo/graphql_view.py), else the cache
        ahead = getattr(context.context, "prepared", None)
        prepared = ahead if ahead is not None else self.documents.get(context.query)
        self.prepared = prepared
        if prepared.parse_error is not None:
            raise prepared.parse_error
        context.graphql_document = prepared.document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        schema: Any = context.schema
        prepared = self.prepared
        assert prepared is not None and prepared.document is not None
        self.documents._validated(schema._schema, prepared, tuple(context.validation_rules))
        errors = prepared.errors or []
        if not errors:
            errors = self._refusals(schema._schema, prepared)
        context.pre_execution_errors = errors
        yield

    def _refusals(self, schema: GraphQLSchema, prepared: Prepared) -> list[GraphQLError]:
        context = self.execution_context
        caller_context = context.context
        locale = getattr(caller_context, "locale", DEFAULT_LOCALE)
        if prepared.schema_asked:
            if self.introspection_signed_in:
                caller = getattr(caller_context, "caller", None)
                if caller is None or caller.viewer is None:
                    return [
                        GraphQLError(
                            render("INTROSPECTION_DISABLED", locale), extensions={"code": "UNAUTHENTICATED"}
                        )
                    ]
            if not is_introspection_only(prepared.document, context.operation_name):  # type: ignore[arg-type]
                # introspection runs off the event loop (IntrospectionLane), data fields cannot
                return [
                    GraphQLError(
                        render("INTROSPECTION_ALONE", locale),
                        extensions={"code": "GRAPHQL_VALIDATION_FAILED"},
                    )
                ]
        cost = prepared.by_operation.get(context.operation_name)
        if cost is None or cost.uses_variables:
            cost = document_cost(schema, prepared.document, context.operation_name, context.variables)  # type: ignore[arg-type]
            if not cost.uses_variables:
                prepared.by_operation[context.operation_name] = cost
        if cost.value > self.max_cost:
            message = render("QUERY_TOO_COMPLEX", locale, cost=cost.value, limit=self.max_cost)
            return [
                GraphQLError(
                    message,
                    extensions={"code": "QUERY_TOO_COMPLEX", "cost": cost.value, "maxCost": self.max_cost},
                )
            ]
        return []
