"""docs/contract.md agrees with the code, both ways: every topic, event type, dead-letter kind
and schema field (nested ones too) is in its tables, and everything its tables name exists.

The document's tables are read by their first header cell: `topic`, `event_type`, `kind`, or
`field`. A `field` table belongs to the schemas linked in the nearest heading above it that
links any (`../schemas/json/<name>.schema.json`); fields are dotted paths, `[]` for the items
of a list (`evidence[].source.agency`). A field whose schema is a closed set of values must
name each value in its row, in backticks.
"""

from __future__ import annotations

import copy
import json
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from schemas.deadletter import ErrorKind
from schemas.events import EVENT_MODELS
from streams.settings import Settings
from streams.topics import declared_topics

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "contract.md"
SCHEMA_DIR = ROOT / "schemas" / "json"
CC = "<cc>"

_TICKED = re.compile(r"`([^`]+)`")
_SCHEMA_LINK = re.compile(r"\]\(\.\./schemas/json/([a-z-]+)\.schema\.json\)")


# -- the document --------------------------------------------------------------------------


@dataclass
class Table:
    heading_schemas: tuple[str, ...]
    """The schemas linked in the nearest heading above that links any."""
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.header[0].strip("` ").lower()

    def named(self) -> Iterator[tuple[str, str]]:
        """(name, the whole row) for each backticked name in the first column."""
        for row in self.rows:
            for name in _TICKED.findall(row[0]):
                yield name, " | ".join(row)


def cells(line: str) -> list[str]:
    # `\|` inside a cell is an escaped bar, not a column break
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]


def tables(text: str) -> list[Table]:
    out: list[Table] = []
    schemas: tuple[str, ...] = ()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            linked = tuple(_SCHEMA_LINK.findall(line))
            if linked:
                schemas = linked
            i += 1
            continue
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            table = Table(schemas, cells(line))
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                table.rows.append(cells(lines[i]))
                i += 1
            out.append(table)
            continue
        i += 1
    return out


# -- the code ------------------------------------------------------------------------------


def load_schemas() -> dict[str, dict[str, Any]]:
    """Every JSON Schema in schemas/json/, by name (`alert`, `detection`, ...)."""
    return {
        p.name.removesuffix(".schema.json"): json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(SCHEMA_DIR.glob("*.schema.json"))
    }


def schema_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every property of a schema, nested objects, lists and `$defs` included, by dotted path,
    with the schema node that describes it."""
    out: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        ref = node.get("$ref")
        if ref is not None:
            walk(schema["$defs"][ref.rsplit("/", 1)[-1]], prefix)
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                walk(sub, prefix)
        if isinstance(node.get("items"), dict):
            walk(node["items"], prefix + "[]")
        for name, sub in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            out.setdefault(path, {})
            walk(sub, path)
            out[path] = sub

    walk(schema, "")
    return out


def enum_values(node: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """The closed set of values a field takes (through `$ref` and optional `null`), if any."""
    ref = node.get("$ref")
    if ref is not None:
        return enum_values(schema["$defs"][ref.rsplit("/", 1)[-1]], schema)
    values = {str(v) for v in node.get("enum", [])}
    for sub in node.get("anyOf", []):
        values |= enum_values(sub, schema)
    return values


def default_settings() -> Settings:
    """The settings' defaults whatever FUSION_* variables this process has, every optional
    topic switched on."""
    names = ["app_id", "partners", "alert_topic_prefix", "stix_topic_prefix", "triage_topic_prefix"]
    names += [n for n in Settings.model_fields if n.startswith("topic_")]
    values = {n: Settings.model_fields[n].default for n in names}
    return Settings(**values, stix_topics=True)


def topic_names(settings: Settings) -> set[str]:
    """Every topic the pipeline declares by default, and the per-partner patterns."""
    names = {t.name for t in declared_topics(settings)}
    triage = settings.triage_topic_prefix + CC
    patterns = (settings.alert_topic_prefix, settings.stix_topic_prefix)
    return (
        names
        | {p + CC for p in patterns}
        | {triage, triage + ".inbound", settings.authorization_topic(CC).lower()}
    )


def event_types() -> set[str]:
    return set(EVENT_MODELS)


def dead_letter_kinds() -> set[str]:
    return set(typing.get_args(ErrorKind))


# -- the check -----------------------------------------------------------------------------


def check(text: str, schemas: dict[str, dict[str, Any]], settings: Settings) -> list[str]:
    """Every disagreement between the document and the code, in words."""
    problems: list[str] = []
    found = tables(text)

    def of_kind(kind: str) -> list[Table]:
        return [t for t in found if t.kind == kind]

    # topics
    known_topics = topic_names(settings)
    documented = {name for t in of_kind("topic") for name, _ in t.named()}
    problems += [f"topic {n} is not in a topic table" for n in sorted(known_topics - documented)]
    problems += [f"topic table names {n}, not a topic" for n in sorted(documented - known_topics)]

    # event types, each with its topic and schema
    types = {name: row for t in of_kind("event_type") for name, row in t.named()}
    problems += [
        f"event type {n} is not in the event_type table" for n in sorted(event_types() - set(types))
    ]
    for name, row in sorted(types.items()):
        if name not in event_types():
            problems.append(f"event_type table names {name}, not an event type")
            continue
        topic = settings.input_topics[name]
        if f"`{topic}`" not in row:
            problems.append(f"event type {name}: its row does not name its topic {topic}")
        if f"{name}.schema.json" not in row:
            problems.append(f"event type {name}: its row does not link {name}.schema.json")

    # dead-letter kinds
    kinds = {name for t in of_kind("kind") for name, _ in t.named()}
    problems += [
        f"dead-letter kind {k} is not in the kind table"
        for k in sorted(dead_letter_kinds() - kinds)
    ]
    problems += [
        f"kind table names {k}, not a dead-letter kind" for k in sorted(kinds - dead_letter_kinds())
    ]

    # fields, per schema
    rows: dict[str, dict[str, list[str]]] = {name: {} for name in schemas}
    for t in of_kind("field"):
        if not t.heading_schemas:
            problems.append(
                f"a field table ({t.rows[0][0] if t.rows else 'empty'}) has no schema link above it"
            )
        for schema_name in t.heading_schemas:
            if schema_name not in schemas:
                problems.append(f"a heading links {schema_name}.schema.json, which does not exist")
                continue
            fields = schema_fields(schemas[schema_name])
            for name, row in t.named():
                if name not in fields:
                    problems.append(
                        f"{schema_name}: the document names field {name}, not in the schema"
                    )
                rows[schema_name].setdefault(name, []).append(row)
    for schema_name, schema in sorted(schemas.items()):
        for path, node in sorted(schema_fields(schema).items()):
            named = rows[schema_name].get(path)
            if not named:
                problems.append(f"{schema_name}: field {path} is not in the document")
                continue
            for value in sorted(enum_values(node, schema)):
                if not any(f"`{value}`" in row for row in named):
                    problems.append(f"{schema_name}: field {path}: value {value} is not named")

    # settings named anywhere in the document
    for var in sorted(set(re.findall(r"`(FUSION_[A-Z0-9_]+)", text))):
        if var.removeprefix("FUSION_").lower() not in Settings.model_fields:
            problems.append(f"the document names {var}, not a setting")
    return problems


# -- tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text() -> str:
    return CONTRACT.read_text(encoding="utf-8")


def test_the_contract_names_everything_and_only_what_exists(text: str) -> None:
    assert check(text, load_schemas(), default_settings()) == []


def test_the_check_sees_every_schema_file_and_table(text: str) -> None:
    schemas = load_schemas()
    assert set(schemas) == {
        *EVENT_MODELS,
        "alert",
        "audit",
        "deadletter",
        "triage-action",
        "triage-shared",
        "triage-audit",
        "leaf",
        "archive",
    }
    kinds = {t.kind for t in tables(text)}
    assert {"topic", "event_type", "kind", "field"} <= kinds
    linked = {s for t in tables(text) if t.kind == "field" for s in t.heading_schemas}
    assert linked == set(schemas)


def test_a_field_added_to_a_schema_fails_the_check(text: str) -> None:
    schemas = copy.deepcopy(load_schemas())
    point = schemas["alert"]["$defs"]["Point"]
    point["properties"]["datum"] = {"type": "string", "description": "Geodetic datum."}
    schemas["tip"]["properties"]["language"] = {"enum": ["en", "es"]}
    problems = check(text, schemas, default_settings())
    assert problems == [
        "alert: field location.datum is not in the document",
        "tip: field language is not in the document",
    ]


def test_a_new_value_and_a_field_the_schema_lost_fail_the_check(text: str) -> None:
    schemas = copy.deepcopy(load_schemas())
    kind = schemas["deadletter"]["$defs"]["DeadLetterError"]["properties"]["kind"]
    kind["enum"] = [*kind["enum"], "quarantined"]
    del schemas["audit"]["$defs"]["KeyField"]["properties"]["origin"]
    problems = check(text, schemas, default_settings())
    assert problems == [
        "audit: the document names field match.fields[].origin, not in the schema",
        "deadletter: field error.kind: value quarantined is not named",
    ]


def test_a_topic_the_document_lacks_fails_the_check(text: str) -> None:
    settings = default_settings().model_copy(update={"topic_routed": "fusion.routed.v3"})
    assert check(text, load_schemas(), settings) == [
        "topic fusion.routed.v3 is not in a topic table",
        "topic table names fusion.routed, not a topic",
    ]


def test_every_dead_letter_kind_the_code_writes_is_in_the_schema() -> None:
    # What validation refuses and what the worker's stages dead-letter (offline replay
    # prints its refusals and writes no dead letters).
    sources = [ROOT / "engine" / "ingest.py", *(ROOT / "streams").rglob("*.py")]
    written: set[str] = set()
    for path in sources:
        written |= set(re.findall(r'Rejection\(\s*"(\w+)"', path.read_text(encoding="utf-8")))
    assert written, "no Rejection(...) found: the pattern is stale"
    assert written <= dead_letter_kinds()
