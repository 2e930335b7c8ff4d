"""PageInfo, and building a connection (edges, nodes, pageInfo, totalCount) from a service page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import strawberry

from services.paging import Page

C = TypeVar("C")

FIRST_DESCRIPTION = "How many, 1..100 (default 20)."
AFTER_DESCRIPTION = "The `endCursor` of the page before; not with `offset`."
OFFSET_DESCRIPTION = "Skip this many to jump to a page; not with `after`."

# a list's paging arguments, as every list field and resolver declares them
First = Annotated[int | None, strawberry.argument(description=FIRST_DESCRIPTION)]
After = Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)]
Offset = Annotated[int | None, strawberry.argument(description=OFFSET_DESCRIPTION)]


@strawberry.type(name="PageInfo", description="Where a page sits in its list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow this page.")
    has_previous_page: bool = strawberry.field(description="Items come before this page.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first item here.")
    end_cursor: str | None = strawberry.field(description="Cursor of the last item; pass it as `after`.")


def build_connection(connection: type[C], edge: type[Any], page: Page[Any], node: Callable[[Any], Any]) -> C:
    edges = [edge(cursor=cursor, node=node(item)) for cursor, item in page.items]
    return connection(  # type: ignore[call-arg]
        edges=edges,
        nodes=[e.node for e in edges],
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=page.total_count,
    )
