"""Tool input schemas as the model needs them, without what pydantic adds for humans.

Every request carries all ~40 tool schemas; the SDK copies and encodes them in Python each time
(about 1.5 ms a request), and the model reads them as input tokens. Pydantic's per-field
`title`s ("Due From") say nothing the property name does not, and an optional field is spelled
`anyOf: [X, {"type": "null"}], default: null`, which for the model means exactly "X, or leave it
out". Compacting them keeps the meaning and drops about a third of the nodes.
"""

from __future__ import annotations

from typing import Any

_NULL = {"type": "null"}


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema with titles dropped and optional-or-null fields folded to the plain type."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = compact_schema(value)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out[key] = [compact_schema(sub) if isinstance(sub, dict) else sub for sub in value]
        elif key == "$defs" and isinstance(value, dict):
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        else:
            out[key] = value
    return _fold_optional(out)


def _fold_optional(schema: dict[str, Any]) -> dict[str, Any]:
    """`{anyOf: [X, null], default: null, ...}` → `{...X, ...}`: omitting the field means null."""
    variants = schema.get("anyOf")
    if (
        not isinstance(variants, list)
        or len(variants) != 2
        or _NULL not in variants
        or schema.get("default") is not None
    ):
        return schema
    (kept,) = [v for v in variants if v != _NULL]
    if not isinstance(kept, dict):
        return schema
    folded = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    for key, value in kept.items():
        folded.setdefault(key, value)  # the field's own description wins over the type's
    return folded
