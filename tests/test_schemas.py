"""Compacted tool schemas keep their meaning for the model and for validation."""

from __future__ import annotations

import json

import jsonschema
import pytest

from voice_app.agent.schemas import compact_schema
from voice_app.tools.server import build_server

CALENDAR_EVENT = {
    "properties": {
        "title": {"description": "What the event is.", "maxLength": 200, "title": "Title",
                  "type": "string"},
        "end": {"anyOf": [{"description": "ISO 8601.", "format": "date-time", "type": "string"},
                          {"type": "null"}], "default": None, "title": "End"},
        "duration_minutes": {"anyOf": [{"maximum": 1440, "minimum": 5, "type": "integer"},
                                       {"type": "null"}],
                             "default": None, "description": "Length in minutes.",
                             "title": "Duration Minutes"},
        "status": {"default": "open", "enum": ["open", "done"], "title": "Status",
                   "type": "string"},
        "tags": {"items": {"title": "Tag", "type": "string"}, "title": "Tags", "type": "array"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": "x", "title": "N"},
    },
    "required": ["title"],
    "title": "calendar_create_eventArguments",
    "type": "object",
}


def test_titles_go_but_a_property_called_title_stays() -> None:
    compact = compact_schema(CALENDAR_EVENT)
    assert "title" not in compact
    assert compact["properties"]["title"] == {
        "description": "What the event is.", "maxLength": 200, "type": "string",
    }
    assert compact["properties"]["tags"] == {"items": {"type": "string"}, "type": "array"}
    assert compact["required"] == ["title"]


def test_optional_or_null_folds_to_the_plain_type() -> None:
    props = compact_schema(CALENDAR_EVENT)["properties"]
    assert props["end"] == {"description": "ISO 8601.", "format": "date-time", "type": "string"}
    # the field's own description wins; the type's bounds come along
    assert props["duration_minutes"] == {
        "description": "Length in minutes.", "maximum": 1440, "minimum": 5, "type": "integer",
    }
    assert props["status"]["default"] == "open"  # a real default is information: kept
    assert "anyOf" in props["note"]  # nullable with a non-null default: left as it was


def test_the_input_is_not_changed() -> None:
    before = json.dumps(CALENDAR_EVENT, sort_keys=True)
    compact_schema(CALENDAR_EVENT)
    assert json.dumps(CALENDAR_EVENT, sort_keys=True) == before


@pytest.fixture(scope="module")
async def tool_schemas() -> dict[str, dict]:
    tools = await build_server(lambda: None).list_tools()  # type: ignore[arg-type, return-value]
    return {t.name: t.input_schema for t in tools}


async def test_every_tool_shrinks_and_accepts_what_it_accepted(
    tool_schemas: dict[str, dict],
) -> None:
    before = sum(len(json.dumps(s)) for s in tool_schemas.values())
    after = sum(len(json.dumps(compact_schema(s))) for s in tool_schemas.values())
    assert after < 0.85 * before, (before, after)
    for name, schema in tool_schemas.items():
        compact = compact_schema(schema)
        jsonschema.Draft202012Validator.check_schema(compact)
        # every argument set the model may send without the optional fields still validates
        required = {k: _example(schema["properties"][k]) for k in schema.get("required", [])}
        jsonschema.validate(required, compact)
        assert set(compact.get("properties", {})) == set(schema.get("properties", {})), name


def _example(prop: dict) -> object:
    kind = prop.get("type") or prop.get("anyOf", [{}])[0].get("type")
    if "enum" in prop:
        return prop["enum"][0]
    if prop.get("format") == "uuid":
        return "5f0c2d1e-8a7b-4c3d-9e0f-1a2b3c4d5e6f"
    if prop.get("format") == "date-time":
        return "2026-06-03T17:00"
    if prop.get("format") == "date":
        return "2026-06-03"
    return {"string": "abcd", "integer": max(1, prop.get("minimum", 1)), "boolean": True,
            "number": 1.0, "array": []}.get(kind, "x")
