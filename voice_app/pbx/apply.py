"""Install the Twilio → agent route into FusionPBX: a pure renderer and a thin asyncpg shell.

Pure part: fill the placeholders of `fusionpbx/dialplan/twilio_to_agent.xml`, check the result the
way FreeSWITCH and FusionPBX need it, and derive the `v_dialplans` row plus the
`v_dialplan_details` rows FusionPBX's own importer would make from it (FreeSWITCH runs
`dialplan_xml`; the GUI regenerates that XML from the details on save, so both must agree).
Every id is a uuid5, so a re-run upserts the same rows and a rollback finds exactly them.

I/O part: `apply_dialplan()` / `rollback_dialplan()` write in one transaction, binding the flag
columns as boolean (FusionPBX 5.5+) or 'true'/'false' text (5.4 and older) after reading their
types from information_schema. `flush_fusionpbx_cache()` is the separate, best-effort cache step:
FusionPBX's dialplan cache never expires in file mode, and `reloadxml` does not touch it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import asyncpg

FUSIONPBX_DIR = Path(__file__).resolve().parents[2] / "fusionpbx"
TEMPLATE_PATH = FUSIONPBX_DIR / "dialplan" / "twilio_to_agent.xml"
CIDRS_PATH = FUSIONPBX_DIR / "dialplan" / "twilio_signalling_cidrs.txt"

# Root of every uuid5 we generate. Never change it: re-runs and rollbacks find rows by these ids.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:voice-app:fusionpbx")

# What the server mints for X-Call-Context (secrets.token_urlsafe: base64url, no padding).
# Must equal the expression in the template; the tests hold them together.
CALL_CONTEXT_PATTERN = r"^[A-Za-z0-9_-]{16,256}$"

ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
EXTENSION = re.compile(r"[0-9]{2,10}")
DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# FusionPBX import-format attributes: they fill v_dialplans columns, not the stored XML.
IMPORT_ATTRIBUTES = (
    "number", "context", "app_uuid", "global", "order", "enabled", "destination", "description",
)
EXTENSION_ATTRIBUTES = {"name", "continue", "uuid"}
CONDITION_ATTRIBUTES = {"field", "expression", "break"}
ACTION_ATTRIBUTES = {"application", "data", "inline"}
BREAK_VALUES = {"on-true", "on-false", "always", "never"}
# FusionPBX's XML editor refuses these (app/dialplans/dialplan_xml.php); so do we.
FORBIDDEN = re.compile(
    r'"(?:system|bgsystem|spawn|bg_spawn|spawn_stream)"|\{(?:system|bgsystem|bg_spawn|spawn)',
    re.IGNORECASE,
)

# Columns the route cannot live without; any other column missing in an older FusionPBX is skipped.
REQUIRED_COLUMNS = {
    "v_dialplans": {"dialplan_uuid", "domain_uuid", "dialplan_context", "dialplan_name",
                    "dialplan_xml", "dialplan_order", "dialplan_enabled"},
    "v_dialplan_details": {"dialplan_detail_uuid", "dialplan_uuid", "dialplan_detail_tag",
                           "dialplan_detail_type", "dialplan_detail_data", "dialplan_detail_group",
                           "dialplan_detail_order"},
}
ACL_TABLES = ("v_access_controls", "v_access_control_nodes")
ACL_LIST = "providers"  # FusionPBX applies it on both SIP profiles with apply-inbound-acl

CONFIG_PATHS = (Path("/etc/fusionpbx/config.conf"), Path("/usr/local/etc/fusionpbx/config.conf"))


class DialplanError(Exception):
    """The route cannot be rendered or applied; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Pure part
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteSettings:
    twilio_account_sid: str
    domain_name: str  # the FusionPBX domain the agent's extension belongs to
    agent_extension: str = "2001"

    def __post_init__(self) -> None:
        if not ACCOUNT_SID.fullmatch(self.twilio_account_sid):
            raise DialplanError("the Twilio account SID must be AC followed by 32 hex digits")
        # Twilio writes the hex part in lower case in X-Twilio-AccountSid; match it exactly.
        object.__setattr__(self, "twilio_account_sid", "AC" + self.twilio_account_sid[2:].lower())
        if not EXTENSION.fullmatch(self.agent_extension):
            raise DialplanError(f"extension {self.agent_extension!r}: expected 2 to 10 digits")
        if not DOMAIN.fullmatch(self.domain_name):
            raise DialplanError(f"domain {self.domain_name!r}: expected a host name")

    @property
    def dialplan_uuid(self) -> uuid.UUID:
        return dialplan_uuid_for(self.agent_extension)


def dialplan_uuid_for(agent_extension: str) -> uuid.UUID:
    # Keyed on the extension only: re-applying with a corrected domain replaces the row instead
    # of leaving a second global route for the same number.
    return uuid.uuid5(NAMESPACE, f"dialplan:twilio_to_agent:{agent_extension}")


@dataclass(frozen=True)
class DialplanRow:
    """One `v_dialplans` row. Flags are Python bools here; `bind_row` adapts them per schema."""

    dialplan_uuid: uuid.UUID
    domain_uuid: uuid.UUID | None  # NULL = global: served in public "single" mode too
    app_uuid: uuid.UUID
    hostname: str | None  # NULL = every host ('' would match none)
    dialplan_context: str
    dialplan_name: str
    dialplan_number: str
    dialplan_destination: bool
    dialplan_continue: bool
    dialplan_xml: str
    dialplan_order: int
    dialplan_enabled: bool
    dialplan_description: str


@dataclass(frozen=True)
class DetailRow:
    """One `v_dialplan_details` row, as FusionPBX's `dialplan::import()` derives it."""

    dialplan_detail_uuid: uuid.UUID
    dialplan_uuid: uuid.UUID
    domain_uuid: uuid.UUID | None
    dialplan_detail_tag: str  # condition | action | anti-action
    dialplan_detail_type: str  # condition: the field; action: the application
    dialplan_detail_data: str  # condition: the expression; action: the data
    dialplan_detail_break: str | None
    dialplan_detail_inline: str | None
    dialplan_detail_group: int
    dialplan_detail_order: int
    dialplan_detail_enabled: bool


@dataclass(frozen=True)
class RenderedDialplan:
    xml: str
    dialplan: DialplanRow
    details: tuple[DetailRow, ...]


def load_template(path: Path = TEMPLATE_PATH) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DialplanError(f"template {path} not found (pass --template)") from None


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Replace every {{name}}; an unknown name is an error rather than a silent leftover."""
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise DialplanError(f"no value for placeholder(s): {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: escape(values[m.group(1)], {'"': "&quot;"}), template)


def render_dialplan(
    route: RouteSettings, domain_uuid: uuid.UUID, template: str | None = None
) -> RenderedDialplan:
    """The stored XML and the rows for `route`. `domain_uuid` is the domain's id in v_domains."""
    text = render_template(
        load_template() if template is None else template,
        {
            "agent_extension": route.agent_extension,
            "twilio_account_sid": route.twilio_account_sid,
            "domain_name": route.domain_name,
            "domain_uuid": str(domain_uuid),
            "dialplan_uuid": str(route.dialplan_uuid),
        },
    )
    try:
        root = _parse(text)  # comments are dropped
    except ET.ParseError as error:
        raise DialplanError(f"template is not well-formed XML: {error}") from None
    meta = {name: root.attrib.pop(name, "") for name in IMPORT_ATTRIBUTES}
    xml = _serialize(root)
    problems = validate_extension(xml)
    if problems:
        raise DialplanError("rendered dialplan is invalid: " + "; ".join(problems))

    row_domain = None if _flag(meta, "global", default=False) else domain_uuid
    dialplan_uuid = uuid.UUID(root.attrib["uuid"])
    if not meta["context"]:
        raise DialplanError("the template's <extension> needs a context attribute")
    try:
        order = int(meta["order"] or "100")
        app_uuid = uuid.UUID(meta["app_uuid"])
    except ValueError:
        raise DialplanError("order must be an integer and app_uuid a UUID") from None
    row = DialplanRow(
        dialplan_uuid=dialplan_uuid,
        domain_uuid=row_domain,
        app_uuid=app_uuid,
        hostname=None,
        dialplan_context=meta["context"],
        dialplan_name=root.attrib["name"],
        dialplan_number=meta["number"],
        dialplan_destination=_flag(meta, "destination", default=False),
        dialplan_continue=root.attrib.get("continue", "false") == "true",
        dialplan_xml=xml,
        dialplan_order=order,
        dialplan_enabled=_flag(meta, "enabled", default=True),
        dialplan_description=meta["description"],
    )
    return RenderedDialplan(xml, row, details_from_xml(xml, dialplan_uuid, row_domain))


def _flag(meta: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = meta.get(name) or ("true" if default else "false")
    if value not in ("true", "false"):
        raise DialplanError(f"attribute {name}={value!r}: expected true or false")
    return value == "true"


def _serialize(root: ET.Element) -> str:
    """Tab-indented like FusionPBX's own XML; bare <extension>, no declaration."""
    for element in root.iter():
        element.text = element.tail = None
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode")


def _parse(xml: str) -> ET.Element:
    """Parse our own template/rows. A DTD is refused first, so no entity tricks reach expat."""
    if re.search(r"<!DOCTYPE|<!ENTITY", xml, re.IGNORECASE):
        raise ET.ParseError("a DTD or entity declaration is not allowed")
    return ET.fromstring(xml)  # noqa: S314 - no DTD (checked above), repo-owned input


def validate_extension(xml: str) -> list[str]:
    """Problems that would break FreeSWITCH, FusionPBX's handler or our detail rows; [] if none."""
    if re.search(r"<\?xml|<!DOCTYPE|<!ENTITY", xml, re.IGNORECASE):
        return ["no XML declaration, DTD or entities: rows are concatenated into one document"]
    try:
        root = _parse(xml)
    except ET.ParseError as error:
        return [f"not well-formed: {error}"]
    problems: list[str] = []
    if root.tag != "extension":
        return [f"root must be <extension>, not <{root.tag}>"]
    if set(root.attrib) - EXTENSION_ATTRIBUTES:
        extra = sorted(set(root.attrib) - EXTENSION_ATTRIBUTES)
        problems.append(f"unexpected <extension> attributes {extra}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", root.get("name", "")):
        problems.append("extension name must match [A-Za-z0-9_.-]+")
    if root.get("continue", "false") not in ("true", "false"):
        problems.append("continue must be true or false")
    try:
        uuid.UUID(root.get("uuid", ""))
    except ValueError:
        problems.append("extension uuid must be a UUID")
    if PLACEHOLDER.search(xml):
        problems.append("unfilled {{placeholder}}")
    if FORBIDDEN.search(xml):
        problems.append("uses an application FusionPBX forbids (system/spawn family)")
    conditions = list(root)
    if not conditions:
        problems.append("no <condition>")
    for condition in conditions:
        if condition.tag != "condition":
            problems.append(f"<{condition.tag}> directly under <extension>: only <condition>")
            continue
        if set(condition.attrib) - CONDITION_ATTRIBUTES:
            problems.append(f"unexpected <condition> attributes {sorted(condition.attrib)}")
        if condition.get("break", "on-false") not in BREAK_VALUES:
            problems.append(f"break={condition.get('break')!r}")
        try:
            re.compile(condition.get("expression", ""))
        except re.error as error:
            problems.append(f"expression {condition.get('expression')!r}: {error}")
        for action in condition:
            if action.tag not in ("action", "anti-action"):
                # <regex> children are valid FreeSWITCH but have no detail-row mapping here.
                problems.append(f"<{action.tag}> inside <condition>: only action/anti-action")
                continue
            if set(action.attrib) - ACTION_ATTRIBUTES:
                problems.append(f"unexpected <{action.tag}> attributes {sorted(action.attrib)}")
            if not action.get("application"):
                problems.append(f"<{action.tag}> without application")
            if action.get("inline", "false") not in ("true", "false"):
                problems.append(f"inline={action.get('inline')!r}")
    return problems


def details_from_xml(
    xml: str, dialplan_uuid: uuid.UUID, domain_uuid: uuid.UUID | None
) -> tuple[DetailRow, ...]:
    """The detail rows FusionPBX's `dialplan::import()` makes from this XML: the order starts at 5
    and steps by 5; a condition with children closes its group (so the GUI rebuilds the same XML).
    """
    rows: list[DetailRow] = []

    def add(tag: str, kind: str, data: str, brk: str | None, inline: str | None) -> None:
        rows.append(
            DetailRow(
                dialplan_detail_uuid=uuid.uuid5(dialplan_uuid, f"detail:{len(rows)}"),
                dialplan_uuid=dialplan_uuid,
                domain_uuid=domain_uuid,
                dialplan_detail_tag=tag,
                dialplan_detail_type=kind,
                dialplan_detail_data=data,
                dialplan_detail_break=brk or None,
                dialplan_detail_inline=inline or None,
                dialplan_detail_group=group,
                dialplan_detail_order=order,
                dialplan_detail_enabled=True,
            )
        )

    group, order = 0, 5
    for condition in _parse(xml).iter("condition"):
        add("condition", condition.get("field", ""), condition.get("expression", ""),
            condition.get("break"), None)
        children = list(condition)
        if children:
            order += 5
            for tag in ("action", "anti-action"):  # FusionPBX lists actions before anti-actions
                for child in (c for c in children if c.tag == tag):
                    add(tag, child.get("application", ""), child.get("data", ""), None,
                        child.get("inline"))
                    order += 5
            group += 1
        order += 5
    return tuple(rows)


# --- the providers ACL -----------------------------------------------------------------------


@dataclass(frozen=True)
class AclNode:
    cidr: str
    description: str

    @property
    def node_uuid(self) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, f"acl:{ACL_LIST}:{self.cidr}")


def load_acl_nodes(path: Path = CIDRS_PATH) -> tuple[AclNode, ...]:
    nodes: list[AclNode] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cidr, _, description = line.partition(" ")
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as error:
            raise DialplanError(f"{path}:{number}: {error}") from None
        nodes.append(AclNode(str(network), description.strip()))
    if not nodes:
        raise DialplanError(f"{path}: no CIDRs")
    return tuple(nodes)


# --- SQL --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    table: str
    sql: str  # with $1, $2 … parameters
    args: tuple[Any, ...] = ()

    def to_psql(self) -> str:
        """The statement with its values inlined, for --dry-run and admins who prefer psql."""
        return re.sub(r"\$(\d+)", lambda m: sql_literal(self.args[int(m.group(1)) - 1]), self.sql)


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return "ARRAY[" + ", ".join(sql_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"  # standard_conforming_strings is on


# (table, column) -> information_schema data_type
ColumnTypes = Mapping[tuple[str, str], str]


def bind_row(table: str, values: Mapping[str, Any], columns: ColumnTypes) -> dict[str, Any]:
    """Keep the columns this FusionPBX has; write flags as boolean or 'true'/'false' text."""
    bound: dict[str, Any] = {}
    for name, value in values.items():
        kind = columns.get((table, name))
        if kind is None:
            if name in REQUIRED_COLUMNS.get(table, ()):
                raise DialplanError(f"{table}.{name} is missing: is this FusionPBX's database?")
            continue
        if isinstance(value, bool) and kind != "boolean":
            if kind not in ("text", "character varying"):
                raise DialplanError(f"{table}.{name} has type {kind}; expected boolean or text")
            value = "true" if value else "false"
        bound[name] = value
    return bound


def _insert(
    table: str, values: Mapping[str, Any], columns: ColumnTypes, conflict: str = ""
) -> Statement:
    names = list(values)
    params = [f"${i}" for i in range(1, len(names) + 1)]
    stamps = [c for c in ("insert_date", "update_date") if (table, c) in columns]
    sql = (
        f"INSERT INTO {table} ({', '.join(names + stamps)})\n"
        f"VALUES ({', '.join(params + ['now()'] * len(stamps))})"
    )
    if conflict:
        updates = [f"{n} = EXCLUDED.{n}" for n in names if n != conflict]
        updates += ["update_date = now()"] if "update_date" in stamps else []
        sql += f"\nON CONFLICT ({conflict}) DO UPDATE SET {', '.join(updates)}"
    return Statement(table, sql, tuple(values.values()))


def apply_statements(rendered: RenderedDialplan, columns: ColumnTypes) -> list[Statement]:
    """Upsert the dialplan (insert_date kept), then replace its details."""
    row = bind_row("v_dialplans", asdict(rendered.dialplan), columns)
    statements = [_insert("v_dialplans", row, columns, conflict="dialplan_uuid")]
    statements.append(
        Statement(
            "v_dialplan_details",
            "DELETE FROM v_dialplan_details WHERE dialplan_uuid = $1",
            (rendered.dialplan.dialplan_uuid,),
        )
    )
    for detail in rendered.details:
        values = bind_row("v_dialplan_details", asdict(detail), columns)
        statements.append(_insert("v_dialplan_details", values, columns))
    return statements


def rollback_statements(dialplan_uuid: uuid.UUID) -> list[Statement]:
    return [
        Statement("v_dialplan_details", "DELETE FROM v_dialplan_details WHERE dialplan_uuid = $1",
                  (dialplan_uuid,)),
        Statement("v_dialplans", "DELETE FROM v_dialplans WHERE dialplan_uuid = $1",
                  (dialplan_uuid,)),
    ]


def acl_statements(nodes: Iterable[AclNode]) -> list[Statement]:
    """Add each CIDR to `providers` unless that list already has it (there is no unique key)."""
    return [
        Statement(
            "v_access_control_nodes",
            "INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,\n"
            "    node_type, node_cidr, node_description, insert_date)\n"
            "SELECT $1::uuid, a.access_control_uuid, 'allow', $2::text, $3::text, now()\n"
            f"FROM v_access_controls a WHERE a.access_control_name = '{ACL_LIST}'\n"
            "AND NOT EXISTS (SELECT 1 FROM v_access_control_nodes n\n"
            "    WHERE n.access_control_uuid = a.access_control_uuid AND n.node_cidr = $2::text)",
            (node.node_uuid, node.cidr, node.description),
        )
        for node in nodes
    ]


def acl_rollback_statements(nodes: Iterable[AclNode]) -> list[Statement]:
    """Remove only the nodes we added (by our uuid5), never an admin's own entry for a CIDR."""
    return [
        Statement(
            "v_access_control_nodes",
            "DELETE FROM v_access_control_nodes WHERE access_control_node_uuid = ANY($1::uuid[])",
            ([node.node_uuid for node in nodes],),
        )
    ]


def render_acl_sql(nodes: Sequence[AclNode]) -> str:
    """The committed `fusionpbx/dialplan/twilio_acl.sql` (tests keep it in step with the list)."""
    lines = [
        "-- Trust Twilio's SIP signalling in FusionPBX's `providers` ACL (idempotent).",
        "-- Generated from twilio_signalling_cidrs.txt by:",
        "--   python -m voice_app.pbx.apply --print-acl-sql > fusionpbx/dialplan/twilio_acl.sql",
        "-- Then flush the configuration:acl.conf cache and run: fs_cli -x reloadacl",
        "BEGIN;",
    ]
    lines += [s.to_psql() + ";" for s in acl_statements(nodes)]
    lines += ["COMMIT;", "", "-- Roll back (removes only the nodes added above):"]
    lines += ["-- " + s.to_psql() + ";" for s in acl_rollback_statements(nodes)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# I/O part
# ---------------------------------------------------------------------------------------------


@dataclass
class ApplyReport:
    action: str  # "apply" or "rollback"
    dry_run: bool
    dialplan_uuid: uuid.UUID
    dialplan_name: str
    existed: bool = False  # our dialplan row was there before this run
    domain_uuid: uuid.UUID | None = None
    flag_types: dict[str, str] = field(default_factory=dict)
    statements: list[Statement] = field(default_factory=list)
    changes: dict[str, int] = field(default_factory=dict)  # "v_dialplans insert" -> rows
    cache_steps: list[str] = field(default_factory=list)

    def sql(self) -> str:
        body = "\n\n".join(s.to_psql() + ";" for s in self.statements)
        return f"BEGIN;\n\n{body}\n\nCOMMIT;\n"

    def summary(self) -> str:
        done = {"apply": "applied", "rollback": "rolled back"}[self.action]
        verb = f"dry run, nothing changed; would {self.action}" if self.dry_run else done
        before = "present" if self.existed else "absent"
        lines = [f"{verb} dialplan {self.dialplan_name} ({self.dialplan_uuid}; {before} before)"]
        if self.flag_types:
            flags = ", ".join(f"{k}={v}" for k, v in self.flag_types.items())
            lines.append(f"  flag columns: {flags}")
        lines += [f"  {name}: {count} row(s)" for name, count in self.changes.items()]
        lines += [f"  cache: {step}" for step in self.cache_steps]
        return "\n".join(lines)


async def apply_dialplan(
    dsn: str,
    route: RouteSettings,
    *,
    dry_run: bool = False,
    acl: bool = False,
    flush_cache: bool = False,
    template: str | None = None,
) -> ApplyReport:
    """Upsert the route (and with `acl`, Twilio's CIDRs in `providers`) in one transaction.

    `dry_run` reads the schema and the domain but writes nothing; `report.sql()` is the SQL.
    `flush_cache` then runs the best-effort cache step on this host (see flush_fusionpbx_cache).
    """
    conn = await asyncpg.connect(dsn)
    try:
        columns = await read_column_types(conn, acl=acl)
        domain_uuid = await find_domain_uuid(conn, route.domain_name)
        rendered = render_dialplan(route, domain_uuid, template)
        statements = apply_statements(rendered, columns)
        if acl:
            await _require_acl_list(conn)
            statements += acl_statements(load_acl_nodes())
        report = ApplyReport(
            action="apply",
            dry_run=dry_run,
            dialplan_uuid=route.dialplan_uuid,
            dialplan_name=rendered.dialplan.dialplan_name,
            existed=await _exists(conn, route.dialplan_uuid),
            domain_uuid=domain_uuid,
            flag_types=_flag_types(columns),
            statements=statements,
        )
        if not dry_run:
            report.changes = await _execute(conn, statements)
    finally:
        await conn.close()
    if flush_cache:
        report.cache_steps = await asyncio.to_thread(
            flush_fusionpbx_cache, route.agent_extension, acl_changed=acl, dry_run=dry_run,
            name=report.dialplan_name,
        )
    return report


async def rollback_dialplan(
    dsn: str,
    agent_extension: str = "2001",
    *,
    dry_run: bool = False,
    acl: bool = False,
    flush_cache: bool = False,
) -> ApplyReport:
    """Delete exactly our rows: the dialplan and its details by uuid5, and our ACL nodes."""
    if not EXTENSION.fullmatch(agent_extension):
        raise DialplanError(f"extension {agent_extension!r}: expected 2 to 10 digits")
    dialplan_uuid = dialplan_uuid_for(agent_extension)
    statements = rollback_statements(dialplan_uuid)
    if acl:
        statements += acl_rollback_statements(load_acl_nodes())
    conn = await asyncpg.connect(dsn)
    try:
        columns = await read_column_types(conn, acl=acl)
        report = ApplyReport(
            action="rollback",
            dry_run=dry_run,
            dialplan_uuid=dialplan_uuid,
            dialplan_name=f"twilio_to_agent_{agent_extension}",
            existed=await _exists(conn, dialplan_uuid),
            flag_types=_flag_types(columns),
            statements=statements,
        )
        if not dry_run:
            report.changes = await _execute(conn, statements)
    finally:
        await conn.close()
    if flush_cache:
        report.cache_steps = await asyncio.to_thread(
            flush_fusionpbx_cache, agent_extension, acl_changed=acl, dry_run=dry_run
        )
    return report


async def read_column_types(
    conn: asyncpg.Connection, *, acl: bool = False
) -> dict[tuple[str, str], str]:
    tables = ["v_dialplans", "v_dialplan_details", *(ACL_TABLES if acl else ())]
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = ANY (current_schemas(false)) AND table_name = ANY ($1::text[])",
        tables,
    )
    columns = {(r["table_name"], r["column_name"]): r["data_type"] for r in rows}
    for table in tables:
        if not any(t == table for t, _ in columns):
            raise DialplanError(f"table {table} not found: is this FusionPBX's database?")
    return columns


def _flag_types(columns: ColumnTypes) -> dict[str, str]:
    flags = ("dialplan_enabled", "dialplan_continue", "dialplan_destination")
    return {f: columns[("v_dialplans", f)] for f in flags if ("v_dialplans", f) in columns}


async def find_domain_uuid(conn: asyncpg.Connection, domain_name: str) -> uuid.UUID:
    # Needed even for a global row: the route sets domain_uuid for CDRs and FusionPBX scripts.
    rows = await conn.fetch("SELECT domain_uuid FROM v_domains WHERE domain_name = $1", domain_name)
    if len(rows) != 1:
        found = "not found" if not rows else f"found {len(rows)} times"
        raise DialplanError(f"domain {domain_name!r} {found} in v_domains (see Advanced → Domains)")
    value: uuid.UUID = rows[0]["domain_uuid"]
    return value


async def _require_acl_list(conn: asyncpg.Connection) -> None:
    sql = "SELECT 1 FROM v_access_controls WHERE access_control_name = $1"
    if not await conn.fetchval(sql, ACL_LIST):
        raise DialplanError(f"ACL {ACL_LIST!r} not found (Advanced → Access Controls)")


async def _exists(conn: asyncpg.Connection, dialplan_uuid: uuid.UUID) -> bool:
    found = await conn.fetchval("SELECT 1 FROM v_dialplans WHERE dialplan_uuid = $1", dialplan_uuid)
    return found is not None


async def _execute(conn: asyncpg.Connection, statements: Sequence[Statement]) -> dict[str, int]:
    changes: dict[str, int] = {}
    async with conn.transaction():
        for statement in statements:
            status: str = await conn.execute(statement.sql, *statement.args)
            verb, *_, count = status.split()  # "INSERT 0 1", "DELETE 11"
            key = f"{statement.table} {verb.lower()}"
            changes[key] = changes.get(key, 0) + int(count)
    return changes


# --- FusionPBX's config.conf and cache -------------------------------------------------------


def read_fusionpbx_config(paths: Sequence[Path] = CONFIG_PATHS) -> dict[str, str]:
    """`key = value` pairs of the first config.conf found; {} when not on the PBX."""
    for path in paths:
        if path.is_file():
            pairs = {}
            for line in path.read_text(encoding="utf-8").splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.lstrip().startswith(("#", ";")):
                    pairs[key.strip()] = value.strip()
            return pairs
    return {}


def dsn_from_config(config: Mapping[str, str]) -> str | None:
    """A DSN from the `database.0.*` keys FusionPBX itself connects with."""
    if config.get("database.0.type", "pgsql") != "pgsql" or "database.0.name" not in config:
        return None
    user = quote(config.get("database.0.username", "fusionpbx"), safe="")
    password = config.get("database.0.password")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = config.get("database.0.host", "127.0.0.1")
    port = config.get("database.0.port", "5432")
    dsn = f"postgresql://{auth}@{host}:{port}/{quote(config['database.0.name'], safe='')}"
    sslmode = config.get("database.0.sslmode")
    return f"{dsn}?sslmode={sslmode}" if sslmode else dsn


def flush_fusionpbx_cache(
    agent_extension: str,
    *,
    acl_changed: bool = False,
    dry_run: bool = False,
    name: str | None = None,
    config: Mapping[str, str] | None = None,
    fs_cli: str | None = None,
) -> list[str]:
    """Drop the cache entries for the public context on this host; report each step.

    Best effort by design: when the tool runs away from the PBX it says what to run there.
    File mode (the installer's default) never expires entries, so this step is what makes the
    change live. reloadxml is not needed: the dialplan is served by Lua from the database.
    """
    config = read_fusionpbx_config() if config is None else config
    fs_cli = fs_cli or shutil.which("fs_cli")
    method = config.get("cache.method", "file")
    location = Path(config.get("cache.location", "/var/cache/fusionpbx"))
    keys = ["dialplan:public", f"dialplan:public:{agent_extension}"]
    keys += ["configuration:acl.conf"] if acl_changed else []
    steps: list[str] = []
    if not config:
        steps.append("no FusionPBX config.conf on this host; assuming cache.method = file")
    commands: list[str] = []
    if method == "file":
        # The Lua cache writes key "a:b" to the file "a.b"; single mode adds ":<number>".
        patterns = ["dialplan.public", "dialplan.public.*"]
        patterns += ["configuration.acl.conf"] if acl_changed else []
        if not location.is_dir():
            paths = " ".join(f"{location}/{p}" for p in patterns)
            steps.append(f"skipped: {location} is not on this host; on the PBX run: rm -f {paths}")
        else:
            found = [path for pattern in patterns for path in sorted(location.glob(pattern))]
            for path in found:
                if not dry_run:
                    path.unlink(missing_ok=True)
                steps.append(f"{'would remove' if dry_run else 'removed'} {path}")
            if not found:
                steps.append(f"nothing cached for the public context in {location}")
    else:
        commands += [f"memcache delete {key}" for key in keys]
    if acl_changed:
        commands.append("reloadacl")
    for command in commands:
        steps.append(_fs_cli(fs_cli, command, dry_run))
    if name and fs_cli and not dry_run:
        served = f'name="{name}"' in _run_fs_cli(fs_cli, "xml_locate dialplan")
        steps.append(f"xml_locate dialplan {'lists' if served else 'does NOT list'} {name}")
    return steps


def _fs_cli(fs_cli: str | None, command: str, dry_run: bool) -> str:
    if dry_run:
        return f"would run: fs_cli -x '{command}'"
    if not fs_cli:
        return f"skipped (no fs_cli on this host); on the PBX run: fs_cli -x '{command}'"
    output = _run_fs_cli(fs_cli, command).strip().splitlines()
    return f"fs_cli -x '{command}': {output[0] if output else 'ok'}"


def _run_fs_cli(fs_cli: str, command: str) -> str:
    try:
        done = subprocess.run(
            [fs_cli, "-x", command], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"failed: {error}"
    return done.stdout if done.returncode == 0 else f"failed ({done.returncode}): {done.stderr}"


if __name__ == "__main__":
    import sys

    from voice_app.pbx.cli import main

    sys.exit(main(sys.argv[1:]))
