"""Documents parsed and validated once per text, and the schema's one extension that uses them.

Strawberry makes every extension anew for each request and runs each one's hooks through context
managers, so one extension is cheaper than the five this replaces (RequestMetrics, ParserCache,
ValidationCache, MaxTokensLimiter, AddValidationRules): measured, their hooks were 8% of a
redemption's CPU. Validation is cached by the document's text, not by the parsed document, whose
hash walks the whole tree on every look-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse, validate

from schema.metrics import RequestMetrics

CACHED_DOCUMENTS = 256


class DocumentCache:
    """Parsed documents (at most `max_tokens` tokens) and their validation errors under the schema's
    rules plus `extra_rules` (the depth and alias limits), by text; at most CACHED_DOCUMENTS each.
    A document that does not parse is not kept: its error is raised again each time."""

    def __init__(self, *, extra_rules: Sequence[type[ASTValidationRule]], max_tokens: int) -> None:
        self.extra_rules = tuple(extra_rules)
        self.max_tokens = max_tokens
        self.parse = lru_cache(maxsize=CACHED_DOCUMENTS)(self._parse)
        self._errors = lru_cache(maxsize=CACHED_DOCUMENTS)(self._validate)

    def _parse(self, query: str) -> DocumentNode:
        return parse(query, max_tokens=self.max_tokens)

    def errors(
        self, schema: GraphQLSchema, query: str, rules: tuple[type[ASTValidationRule], ...]
    ) -> list[GraphQLError]:
        """Validation errors of `query` (already parsed through `parse`), under `rules` and the extra ones."""
        return self._errors(schema, query, rules)

    def _validate(
        self, schema: GraphQLSchema, query: str, rules: tuple[type[ASTValidationRule], ...]
    ) -> list[GraphQLError]:
        return validate(schema, self.parse(query), (*rules, *self.extra_rules))


class RequestHooks(RequestMetrics):
    """The schema's extension: request metrics (RequestMetrics), and the document parsed and validated
    through a DocumentCache shared by every request."""

    def __init__(self, documents: DocumentCache) -> None:
        super().__init__()
        self.documents = documents

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.graphql_document = self.documents.parse(context.query)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        schema: Any = context.schema
        context.pre_execution_errors = self.documents.errors(
            schema._schema, context.query, tuple(context.validation_rules)
        )
        yield
