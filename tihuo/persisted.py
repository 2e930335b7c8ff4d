"""Persisted documents (RULES-v2 §6): a request may name its document by the SHA-256 of its text
instead of sending it, and a manifest of trusted documents may be all that some callers can run.

How clients name a document, each accepted unchanged:
- Apollo's automatic persisted queries (Apollo Client's persisted-queries link, urql's
  persistedExchange, GraphQL Code Generator's documents): `extensions.persistedQuery
  {version: 1, sha256Hash}`, in a POST body or a GET's `extensions` parameter. A hash the server
  does not know is answered the Apollo way, `PersistedQueryNotFound` with the code
  PERSISTED_QUERY_NOT_FOUND and HTTP 200, so the client sends the text with the hash once
  (register) and the hash alone afterwards. The text must hash to the hash it comes with.
- `documentId` (the GraphQL-over-HTTP persisted documents proposal, and what GraphQL Code
  Generator's guide sends: `sha256:<hex>` or the bare hex) and Relay's `doc_id`, for documents of
  the trusted manifest. A `sha256:` prefix is accepted in APQ's sha256Hash too, as a client may
  hand on Code Generator's hash unchanged.

Where the texts come from: the trusted manifest (TIHUO_TRUSTED_DOCUMENTS), then the texts the
document cache keeps (schema.documents), which is the APQ store: in-process and bounded, so with
several API processes a client may register a text once on each; Apollo's protocol is made for
that. With TIHUO_TRUSTED_DOCUMENTS_ONLY the callers it names (services.access) run only the
manifest's documents, however they send them (the hash, the text, or both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from graphql import GraphQLError, OperationDefinitionNode, parse

from core.settings import SettingsError
from schema.documents import DocumentCache, digest_of
from services.access import runs_only_trusted_documents
from services.runtime import Caller
from tihuo.edge import RequestRefused

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Apollo's own words: its clients recognise the miss by this message or by the code
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"
NOT_FOUND_CODE = "PERSISTED_QUERY_NOT_FOUND"
# a miss must not be kept by a cache in front (the next GET of the same hash may find it)
NOT_FOUND_CACHE_CONTROL = "private, no-cache, must-revalidate"
APOLLO_MANIFEST = "apollo-persisted-query-manifest"


@dataclass(frozen=True)
class TrustedDocument:
    text: str
    # the names of its operations: the metrics may label by them, as the set is the manifest's
    operation_names: frozenset[str]

    def label(self, operation_name: str | None) -> str | None:
        if operation_name in self.operation_names:
            return operation_name
        if len(self.operation_names) == 1:
            return next(iter(self.operation_names))
        return None


@dataclass(frozen=True)
class Resolved:
    """The text a request runs, and its manifest entry when it is a trusted document."""

    text: str
    trusted: TrustedDocument | None


def load_manifest(path: Path) -> dict[str, TrustedDocument]:
    """The trusted documents of a manifest file, by the hex SHA-256 of their text: a JSON object
    of hash -> text (GraphQL Code Generator's persisted-documents.json, whose keys are
    `sha256:<hex>`; Relay's persisted queries with SHA256) or Apollo's persisted query manifest. Every hash must be that of its text (a
    manifest made with another hash, such as Code Generator's default sha1, is refused) and every
    text must parse; else SettingsError naming the variable."""

    def refused(problem: str) -> SettingsError:
        return SettingsError(f"TIHUO_TRUSTED_DOCUMENTS: {path}: {problem}")

    try:
        content = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise refused(f"cannot be read ({exc.strerror})") from None
    except orjson.JSONDecodeError:
        raise refused("is not JSON") from None
    if isinstance(content, dict) and content.get("format") == APOLLO_MANIFEST:
        operations = content.get("operations")
        if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
            raise refused("an Apollo manifest needs a list of operations")
        content = {operation.get("id"): operation.get("body") for operation in operations}
    if not isinstance(content, dict):
        raise refused("must be a JSON object of SHA-256 -> document")
    trusted = {}
    for key, text in content.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise refused("must be a JSON object of SHA-256 -> document")
        hexadecimal = key.lower().removeprefix("sha256:")  # Code Generator writes "sha256:<hex>"
        if digest_of(text).hex() != hexadecimal:
            raise refused(f"{key!r} is not the SHA-256 of its document (made with another hash?)")
        try:
            document = parse(text)
        except GraphQLError as error:
            raise refused(f"the document {key} does not parse: {error.message}") from None
        names = frozenset(
            definition.name.value
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode) and definition.name is not None
        )
        trusted[hexadecimal] = TrustedDocument(text=text, operation_names=names)
    return trusted


def requested_hash(extensions: dict[str, Any] | None) -> str | None:
    """The hex SHA-256 an APQ request names (`extensions.persistedQuery`), None if it names none;
    RequestRefused for one that is malformed or of a version other than 1 (Apollo: 400)."""
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise RequestRefused(400, "BAD_REQUEST", "persisted.version")
    value = persisted.get("sha256Hash")
    # Code Generator's documents carry their hash as "sha256:<hex>", and clients pass it on as it is
    hexadecimal = value.lower().removeprefix("sha256:") if isinstance(value, str) else ""
    if not _SHA256.fullmatch(hexadecimal):
        raise RequestRefused(400, "BAD_REQUEST", "persisted.hash")
    return hexadecimal


def document_id_hash(value: object) -> str:
    """The hex SHA-256 in a `documentId` (`sha256:<hex>` or `<hex>`) or a Relay `doc_id`."""
    if isinstance(value, str):
        hexadecimal = value.removeprefix("sha256:").lower()
        if _SHA256.fullmatch(hexadecimal):
            return hexadecimal
    raise RequestRefused(400, "BAD_REQUEST", "persisted.hash")


def with_document_id(extensions: dict[str, Any] | None, document_id: object) -> dict[str, Any]:
    """The request's extensions naming the document of `document_id` as APQ does, so one path
    resolves both; refused when both name a document and not the same one."""
    hexadecimal = document_id_hash(document_id)
    named = requested_hash(extensions)
    if named is not None and named != hexadecimal:
        raise RequestRefused(400, "BAD_REQUEST", "persisted.mismatch")
    return {**(extensions or {}), "persistedQuery": {"version": 1, "sha256Hash": hexadecimal}}


class PersistedDocuments:
    """Which text a request runs, from its `query` and the hash it names."""

    def __init__(
        self, cache: DocumentCache, trusted: dict[str, TrustedDocument] | None, only: str = "off"
    ) -> None:
        self.cache = cache
        self.trusted = trusted or {}
        self.only = only

    def resolve(self, query: object, sha256_hash: str | None, caller: Caller) -> Resolved | None:
        """The text to run and its manifest entry; None when the request has no text and names no
        hash (Strawberry then answers that a query is missing). Raises RequestRefused when the
        text is not the hash's, the document is not found (the Apollo way), or the caller may run
        only trusted documents and this is not one."""
        restricted = runs_only_trusted_documents(caller, self.only)
        if sha256_hash is None:
            if not isinstance(query, str):
                return None
            trusted = self.trusted.get(digest_of(query).hex()) if self.trusted else None
            if restricted and trusted is None:
                raise RequestRefused(403, "PERSISTED_QUERY_NOT_IN_LIST", "persisted.not_listed")
            return Resolved(query, trusted)
        trusted = self.trusted.get(sha256_hash)
        if restricted and trusted is None:
            raise RequestRefused(403, "PERSISTED_QUERY_NOT_IN_LIST", "persisted.not_listed")
        if isinstance(query, str):
            # registering: the text must be the hash's, so nobody can tie another text to a hash
            if digest_of(query).hex() != sha256_hash:
                raise RequestRefused(400, "BAD_REQUEST", "persisted.mismatch")
            return Resolved(query, trusted)
        if trusted is not None:
            return Resolved(trusted.text, trusted)
        text = self.cache.text_of(bytes.fromhex(sha256_hash))
        if text is None:
            raise RequestRefused(
                200,
                NOT_FOUND_CODE,
                "persisted.not_found",
                literal=NOT_FOUND_MESSAGE,
                cache_control=NOT_FOUND_CACHE_CONTROL,
            )
        return Resolved(text, None)
