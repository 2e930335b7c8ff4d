"""schema.graphql is what the code generates; regenerate it with `tihuo export-schema > schema.graphql`."""

from __future__ import annotations

from pathlib import Path

from schema.root import build_schema

CHECKED_IN = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_schema_graphql_matches_the_code():
    assert CHECKED_IN.read_text(encoding="utf-8") == build_schema().as_str() + "\n", (
        "schema.graphql is stale: run `tihuo export-schema > schema.graphql`"
    )


def test_every_type_field_argument_and_enum_value_is_described():
    missing = []
    for type_ in build_schema()._schema.type_map.values():
        if type_.name.startswith("__") or type_.name in {"String", "Int", "Boolean", "ID", "Float"}:
            continue
        if not type_.description:
            missing.append(type_.name)
        for name, value in (getattr(type_, "values", None) or {}).items():
            if not value.description:
                missing.append(f"{type_.name}.{name}")
        for name, field in (getattr(type_, "fields", None) or {}).items():
            if not field.description:
                missing.append(f"{type_.name}.{name}")
            for arg_name, arg in (getattr(field, "args", None) or {}).items():
                if not arg.description:
                    missing.append(f"{type_.name}.{name}({arg_name})")
    assert missing == []
