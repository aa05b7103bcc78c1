"""The FusionPBX route for Twilio → agent: the XML itself, and the apply tool against PostgreSQL.

No FreeSWITCH here (it is not packaged for this OS), so the XML is checked statically and its
conditions are walked with FreeSWITCH's hunt rules; its PCRE expressions are the simple subset
Python's `re` evaluates the same way. The database half creates FusionPBX's tables from
fusionpbx/schema/v_dialplans.sql in a scratch database, once per flag-column flavour
(boolean: FusionPBX 5.5+; text 'true'/'false': 5.4 and older), and runs the same SELECTs as
FusionPBX's Lua dialplan handler.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import astuple
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from voice_app.auth.secrets import new_token
from voice_app.pbx.apply import (
    CALL_CONTEXT_PATTERN,
    FUSIONPBX_DIR,
    DialplanError,
    RouteSettings,
    apply_dialplan,
    bind_row,
    details_from_xml,
    dialplan_uuid_for,
    flush_fusionpbx_cache,
    load_acl_nodes,
    load_template,
    render_acl_sql,
    render_dialplan,
    render_template,
    rollback_dialplan,
    validate_extension,
)
from voice_app.pbx.cli import main as cli_main

SID = "AC" + "0123456789abcdef" * 2
OTHER_SID = "AC" + "fedcba9876543210" * 2
DOMAIN = "pbx.example.com"
DOMAIN_UUID = uuid.UUID("11111111-2222-4333-8444-555555555555")
ROUTE = RouteSettings(SID, DOMAIN)
SCHEMA = FUSIONPBX_DIR / "schema" / "v_dialplans.sql"
BRIDGE = ("bridge", f"user/2001@{DOMAIN}")
FORBIDDEN_403 = [("respond", "403 Forbidden")]


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - XML this repo renders, no DTD


def rendered_xml(route: RouteSettings = ROUTE) -> str:
    return render_dialplan(route, DOMAIN_UUID).xml


def hunt(xml: str, variables: dict[str, str]) -> list[tuple[str, str]]:
    """The actions FreeSWITCH queues for this extension (mod_dialplan_xml's rules, no nesting):
    a true condition adds its actions, a false one its anti-actions, and break=on-false (the
    default) stops at a false condition. [] means the extension did not match: the hunt goes on.
    """
    queued: list[tuple[str, str]] = []
    for condition in parse(xml).iter("condition"):
        field = condition.get("field", "")
        value = re.sub(r"\$\{([^}]+)\}", lambda m: variables.get(m.group(1), ""), field)
        value = value if field.startswith("${") else variables.get(field, "")
        matched = re.search(condition.get("expression", ""), value) is not None
        tag = "action" if matched else "anti-action"
        queued += [(a.get("application", ""), a.get("data", "")) for a in condition if a.tag == tag]
        brk = condition.get("break", "on-false")
        if brk == "always" or (brk == "on-false" and not matched) or (brk == "on-true" and matched):
            break
    return queued


def twilio_call(**overrides: str | None) -> dict[str, str]:
    call: dict[str, str | None] = {
        "destination_number": "2001",
        "sip_h_X-Twilio-AccountSid": SID,
        "sip_h_X-Twilio-CallSid": "CA" + "1" * 32,
        "sip_h_X-Call-Context": new_token(),
        "sip_h_X-Caller-Id": "+15551234567",
    }
    call.update(overrides)
    return {k: v for k, v in call.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# The XML
# ---------------------------------------------------------------------------------------------


def test_rendered_xml_is_a_bare_valid_extension() -> None:
    xml = rendered_xml()
    assert validate_extension(xml) == []
    root = parse(xml)
    assert root.tag == "extension"
    assert set(root.attrib) == {"name", "continue", "uuid"}  # import attributes went to columns
    assert root.get("name") == "twilio_to_agent_2001"
    assert root.get("continue") == "false"
    assert uuid.UUID(root.get("uuid", "")) == dialplan_uuid_for("2001")
    assert not xml.lstrip().startswith("<?xml") and "<context" not in xml
    assert "{{" not in xml


@pytest.mark.parametrize("number", ["2001"])
def test_the_agent_number_with_our_headers_is_bridged(number: str) -> None:
    actions = hunt(rendered_xml(), twilio_call(destination_number=number))
    assert actions[-1] == BRIDGE
    assert ("respond", "403 Forbidden") not in actions


@pytest.mark.parametrize("number", ["2002", "20011", "12001", "200", "", "2001 ", "+2001"])
def test_other_numbers_fall_through_to_other_routes(number: str) -> None:
    assert hunt(rendered_xml(), twilio_call(destination_number=number)) == []


@pytest.mark.parametrize("sid", [OTHER_SID, SID.upper(), SID + "0", SID[:-1], "", None])
def test_another_or_missing_account_sid_is_refused(sid: str | None) -> None:
    assert hunt(rendered_xml(), twilio_call(**{"sip_h_X-Twilio-AccountSid": sid})) == FORBIDDEN_403


def test_an_upper_case_configured_sid_still_matches_twilios_lower_case_header() -> None:
    route = RouteSettings("AC" + "0123456789ABCDEF" * 2, DOMAIN)
    assert hunt(rendered_xml(route), twilio_call())[-1] == BRIDGE


@pytest.mark.parametrize(
    "token", [new_token(), new_token(12), "A" * 16, "a-b_c" * 20, "Z" * 256], ids=str.__len__
)
def test_well_formed_call_context_is_accepted(token: str) -> None:
    assert hunt(rendered_xml(), twilio_call(**{"sip_h_X-Call-Context": token}))[-1] == BRIDGE


@pytest.mark.parametrize(
    "token",
    [
        None,  # header missing
        "",
        "A" * 15,  # too short
        "A" * 257,  # overlong
        "abc${system(rm -rf /)}defghijk",  # channel-variable expansion
        "abcdefghijklmnop\r\nX-Evil: 1",  # header injection
        "abcdefghijklmnop;evil=1",
        "abcdefghijklmnop abc",
        "abcdefghijklmnop%0d%0a",
        "abcdefghijklmnop==",  # padded base64 is not what we mint
        "abcdefghijklmnop.qrs",
        "abcdefghijklmnopé",
    ],
)
def test_bad_call_context_is_refused(token: str | None) -> None:
    assert hunt(rendered_xml(), twilio_call(**{"sip_h_X-Call-Context": token})) == FORBIDDEN_403


def test_call_context_expression_is_the_one_the_server_mints_for() -> None:
    condition = next(
        c for c in parse(rendered_xml()).iter("condition")
        if c.get("field") == "${sip_h_X-Call-Context}"
    )
    assert condition.get("expression") == CALL_CONTEXT_PATTERN
    assert all(re.fullmatch(CALL_CONTEXT_PATTERN, new_token()) for _ in range(200))


def test_actions_set_the_domain_inline_keep_headers_and_bridge_to_the_registration() -> None:
    root = parse(rendered_xml())
    actions = [a for a in root.iter("action")]
    data = [(a.get("application"), a.get("data"), a.get("inline")) for a in actions]
    assert data[:3] == [
        ("export", "call_direction=inbound", "true"),
        ("set", f"domain_uuid={DOMAIN_UUID}", "true"),
        ("set", f"domain_name={DOMAIN}", "true"),
    ]
    assert ("set", "sip_copy_custom_headers=true", None) in data
    assert ("set", "hangup_after_bridge=true", None) in data
    assert ("set", "continue_on_fail=false", None) in data
    assert data[-1] == ("bridge", f"user/2001@{DOMAIN}", None)
    # The header copy is not disabled anywhere, and nothing strips X- headers from the agent leg.
    assert "sip_copy_custom_headers=false" not in rendered_xml()
    assert "exclude_outgoing_extra_header" not in rendered_xml()


def test_another_extension_and_domain_are_rendered_everywhere() -> None:
    xml = rendered_xml(RouteSettings(SID, "tenant.example.org", "3005"))
    assert hunt(xml, twilio_call(destination_number="3005"))[-1] == (
        "bridge",
        "user/3005@tenant.example.org",
    )
    assert hunt(xml, twilio_call()) == []
    assert dialplan_uuid_for("3005") != dialplan_uuid_for("2001")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"twilio_account_sid": "AC123", "domain_name": DOMAIN},
        {"twilio_account_sid": "SK" + "0" * 32, "domain_name": DOMAIN},
        {"twilio_account_sid": SID, "domain_name": "pbx.example.com\" evil=\""},
        {"twilio_account_sid": SID, "domain_name": "-bad"},
        {"twilio_account_sid": SID, "domain_name": DOMAIN, "agent_extension": "2001$|.*"},
        {"twilio_account_sid": SID, "domain_name": DOMAIN, "agent_extension": "1"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(DialplanError):
        RouteSettings(**kwargs)


def test_template_problems_are_refused() -> None:
    template = load_template()
    with pytest.raises(DialplanError, match="placeholder"):
        render_template("<x a='{{nope}}'/>", {})
    with pytest.raises(DialplanError, match="well-formed"):
        render_dialplan(ROUTE, DOMAIN_UUID, template.replace("</extension>", ""))
    with pytest.raises(DialplanError, match="forbids"):
        render_dialplan(ROUTE, DOMAIN_UUID, template.replace('"bridge"', '"system"'))
    with pytest.raises(DialplanError):
        render_dialplan(ROUTE, DOMAIN_UUID, "<!DOCTYPE x [<!ENTITY a 'b'>]>" + template)


@pytest.mark.parametrize(
    "xml",
    [
        '<?xml version="1.0"?><extension name="a" uuid="%s"><condition/></extension>',
        '<context name="public"><extension name="a" uuid="%s"/></context>',
        '<extension name="a b" uuid="%s"><condition/></extension>',
        '<extension name="a" uuid="%s"><condition break="sometimes"/></extension>',
        '<extension name="a" uuid="%s"><condition field="x" expression="(["/></extension>',
        '<extension name="a" uuid="%s"><condition><action data="x"/></condition></extension>',
        '<extension name="a" uuid="%s"><condition><regex field="a"/></condition></extension>',
        '<extension name="a" uuid="%s"><condition>',
    ],
)
def test_validate_extension_finds_problems(xml: str) -> None:
    assert validate_extension(xml % uuid.uuid4()) != []


def structure_from_xml(xml: str) -> list[tuple[Any, ...]]:
    return [
        (c.get("field"), c.get("expression"), c.get("break"),
         [(a.tag, a.get("application"), a.get("data"), a.get("inline")) for a in c])
        for c in parse(xml).iter("condition")
    ]


def structure_from_details(details: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rebuild the conditions the way FusionPBX's XML generator does: per group, conditions in
    order, and the group's actions then anti-actions inside its last condition."""
    rank = {"condition": 1, "action": 2, "anti-action": 3}
    rows = sorted(details, key=lambda d: (d["dialplan_detail_group"],
                                          rank[d["dialplan_detail_tag"]],
                                          d["dialplan_detail_order"]))
    out: list[tuple[Any, ...]] = []
    for group in sorted({r["dialplan_detail_group"] for r in rows}):
        in_group = [r for r in rows if r["dialplan_detail_group"] == group]
        conditions = [r for r in in_group if r["dialplan_detail_tag"] == "condition"]
        children = [
            (r["dialplan_detail_tag"], r["dialplan_detail_type"], r["dialplan_detail_data"],
             r["dialplan_detail_inline"])
            for r in in_group if r["dialplan_detail_tag"] != "condition"
        ]
        for i, c in enumerate(conditions):
            last = i == len(conditions) - 1
            out.append((c["dialplan_detail_type"], c["dialplan_detail_data"],
                        c["dialplan_detail_break"], children if last else []))
    return out


def test_details_mirror_the_xml_like_fusionpbx_import() -> None:
    rendered = render_dialplan(ROUTE, DOMAIN_UUID)
    details = [d.__dict__ for d in rendered.details]
    assert structure_from_details(details) == structure_from_xml(rendered.xml)
    assert [d.dialplan_detail_order for d in rendered.details][:4] == [5, 10, 15, 25]
    assert {d.dialplan_detail_group for d in rendered.details} == {0, 1}
    assert all(d.domain_uuid is None for d in rendered.details)  # global, like its parent
    again = details_from_xml(rendered.xml, rendered.dialplan.dialplan_uuid, None)
    assert again == rendered.details  # deterministic ids


def test_dialplan_row_is_a_global_public_inbound_route() -> None:
    row = render_dialplan(ROUTE, DOMAIN_UUID).dialplan
    assert row.domain_uuid is None and row.hostname is None
    assert row.dialplan_context == "public"
    assert 10 < row.dialplan_order < 999  # after 010_caller_details, before 999_not-found
    assert row.dialplan_enabled and not row.dialplan_continue and not row.dialplan_destination
    assert str(row.app_uuid) == "c03b422e-13a8-bd1b-e42b-b6b9b4d27ce4"  # Inbound Routes
    assert row.dialplan_number == "2001"


def test_flags_bind_as_boolean_or_text_and_missing_columns_are_reported() -> None:
    values = {"dialplan_uuid": uuid.uuid4(), "dialplan_enabled": True, "hostname": None}
    boolean = {
        ("v_dialplans", "dialplan_uuid"): "uuid",
        ("v_dialplans", "dialplan_enabled"): "boolean",
        ("v_dialplans", "hostname"): "text",
    }
    assert bind_row("v_dialplans", values, boolean)["dialplan_enabled"] is True
    text = {**boolean, ("v_dialplans", "dialplan_enabled"): "text"}
    assert bind_row("v_dialplans", values, text)["dialplan_enabled"] == "true"
    with pytest.raises(DialplanError, match="dialplan_enabled"):
        bind_row("v_dialplans", values, {**boolean, ("v_dialplans", "dialplan_enabled"): "integer"})
    with pytest.raises(DialplanError, match="missing"):
        bind_row("v_dialplans", values, {("v_dialplans", "hostname"): "text"})


def test_acl_list_and_committed_sql_agree() -> None:
    nodes = load_acl_nodes()
    assert len(nodes) == 8 and all(n.cidr.endswith("/30") for n in nodes)
    assert "54.172.60.0/30" in {n.cidr for n in nodes}
    committed = (FUSIONPBX_DIR / "dialplan" / "twilio_acl.sql").read_text(encoding="utf-8")
    assert committed == render_acl_sql(nodes), "regenerate with --print-acl-sql"


# ---------------------------------------------------------------------------------------------
# The cache step
# ---------------------------------------------------------------------------------------------


def fake_fs_cli(tmp_path: Path) -> tuple[str, Path]:
    """A stand-in fs_cli executable that logs its command and answers like FreeSWITCH."""
    log = tmp_path / "fs_cli.log"
    script = tmp_path / "fs_cli"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$2" >> "{log}"\n'
        'if [ "$2" = "xml_locate dialplan" ]; then\n'
        '  echo \'<document><extension name="twilio_to_agent_2001"/></document>\'\n'
        "else echo '+OK'; fi\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


def test_file_cache_flush_removes_public_entries_only(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("dialplan.public", "dialplan.public.2001", "configuration.acl.conf",
                 f"dialplan.{DOMAIN}", "directory.2001@pbx.example.com"):
        (cache / name).write_text("cached")
    fs_cli, log = fake_fs_cli(tmp_path)
    config = {"cache.method": "file", "cache.location": str(cache)}

    dry = flush_fusionpbx_cache(
        "2001", acl_changed=True, dry_run=True, config=config, fs_cli=fs_cli
    )
    assert len(list(cache.iterdir())) == 5 and not log.exists()
    assert any("would remove" in step for step in dry)

    steps = flush_fusionpbx_cache(
        "2001", acl_changed=True, config=config, fs_cli=fs_cli, name="twilio_to_agent_2001"
    )
    assert {p.name for p in cache.iterdir()} == {
        "directory.2001@pbx.example.com", f"dialplan.{DOMAIN}"
    }
    assert log.read_text().splitlines() == ["reloadacl", "xml_locate dialplan"]
    assert any("lists twilio_to_agent_2001" in step for step in steps)


def test_memcache_flush_deletes_the_keys_through_fs_cli(tmp_path: Path) -> None:
    fs_cli, log = fake_fs_cli(tmp_path)
    config = {"cache.method": "memcache"}
    flush_fusionpbx_cache("2001", config=config, fs_cli=fs_cli)
    assert log.read_text().splitlines() == [
        "memcache delete dialplan:public",
        "memcache delete dialplan:public:2001",
    ]


def test_flush_away_from_the_pbx_says_what_to_run(tmp_path: Path) -> None:
    config = {"cache.location": str(tmp_path / "absent")}
    steps = flush_fusionpbx_cache("2001", acl_changed=True, config=config, fs_cli=None)
    assert any("rm -f" in s and "dialplan.public.*" in s for s in steps)
    assert any("fs_cli -x 'reloadacl'" in s and "skipped" in s for s in steps)


# ---------------------------------------------------------------------------------------------
# Against PostgreSQL with FusionPBX's tables
# ---------------------------------------------------------------------------------------------


def _admin_urls() -> list[str]:
    if os.environ.get("TEST_DATABASE_URL"):
        return [os.environ["TEST_DATABASE_URL"]]
    return [f"postgresql://{user}@127.0.0.1:5432/test" for user in ("postgres", "root")]


async def _admin() -> tuple[asyncpg.Connection, str]:
    error: Exception | None = None
    for url in _admin_urls():
        try:
            return await asyncpg.connect(url), url
        except (OSError, asyncpg.PostgresError) as e:
            error = e
    raise RuntimeError(f"no PostgreSQL for the dialplan tests: {error}")


def schema_sql(flavour: str) -> str:
    sql = SCHEMA.read_text(encoding="utf-8")
    if flavour == "text":  # FusionPBX <= 5.4
        sql = re.sub(r"\b(dialplan_destination|dialplan_continue|dialplan_enabled) boolean",
                     r"\1 text", sql)
    return sql


class Pbx:
    """A scratch FusionPBX database: one domain, the seeded `providers` ACL."""

    def __init__(self, dsn: str, flavour: str, conn: asyncpg.Connection) -> None:
        self.dsn, self.flavour, self.conn = dsn, flavour, conn

    @property
    def true(self) -> str:
        return "true" if self.flavour == "boolean" else "'true'"

    async def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        tables = ("v_dialplans", "v_dialplan_details", "v_access_control_nodes")
        return {
            t: [tuple(r) for r in await self.conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2, 3")]
            for t in tables
        }

    async def our_row(self) -> asyncpg.Record:
        rows = await self.conn.fetch("SELECT * FROM v_dialplans")
        assert len(rows) == 1
        return rows[0]


@pytest.fixture(params=["boolean", "text"])
async def pbx(request: pytest.FixtureRequest) -> AsyncIterator[Pbx]:
    admin, url = await _admin()
    name = f"fusionpbx_test_{request.param}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(url)._replace(path="/" + name))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(schema_sql(request.param))
        await conn.execute(
            "INSERT INTO v_domains (domain_uuid, domain_name, domain_enabled)"
            " VALUES ($1, $2, true)",
            DOMAIN_UUID, DOMAIN,
        )
        await conn.execute(
            "INSERT INTO v_access_controls (access_control_uuid, access_control_name,"
            " access_control_default) VALUES ($1, 'providers', 'deny')",
            uuid.uuid4(),
        )
        yield Pbx(dsn, request.param, conn)
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_apply_twice_leaves_one_correct_row_and_its_details(pbx: Pbx) -> None:
    first = await apply_dialplan(pbx.dsn, ROUTE)
    assert not first.existed and first.changes["v_dialplans insert"] == 1
    row1 = await pbx.our_row()
    second = await apply_dialplan(pbx.dsn, ROUTE)
    assert second.existed
    row = await pbx.our_row()

    expected = render_dialplan(ROUTE, DOMAIN_UUID)
    flag = (lambda v: v) if pbx.flavour == "boolean" else (lambda v: "true" if v else "false")
    assert second.flag_types["dialplan_enabled"] == pbx.flavour
    assert row["dialplan_uuid"] == dialplan_uuid_for("2001")
    assert row["domain_uuid"] is None and row["hostname"] is None
    assert row["dialplan_context"] == "public"
    assert row["dialplan_name"] == "twilio_to_agent_2001"
    assert row["dialplan_xml"] == expected.xml
    assert row["dialplan_order"] == 100
    assert row["dialplan_enabled"] == flag(True)
    assert row["dialplan_continue"] == flag(False)
    assert row["dialplan_destination"] == flag(False)
    assert row["insert_date"] == row1["insert_date"]  # an update, not a new row
    assert row["update_date"] >= row1["update_date"]

    details = await pbx.conn.fetch(
        "SELECT * FROM v_dialplan_details ORDER BY dialplan_detail_order"
    )
    assert len(details) == len(expected.details)
    by_column = [dict(d) for d in details]
    for stored, want in zip(by_column, expected.details, strict=True):
        assert stored["dialplan_detail_uuid"] == want.dialplan_detail_uuid
        assert stored["dialplan_detail_enabled"] is True
        assert (stored["dialplan_detail_tag"], stored["dialplan_detail_type"],
                stored["dialplan_detail_data"]) == astuple(want)[3:6]
    assert structure_from_details(by_column) == structure_from_xml(row["dialplan_xml"])


async def test_the_lua_handler_serves_the_route_in_both_public_modes(pbx: Pbx) -> None:
    await apply_dialplan(pbx.dsn, ROUTE)
    enabled = f"p.dialplan_enabled = {pbx.true}"
    hosts = "(p.hostname = $1 OR p.hostname IS NULL)"
    single = await pbx.conn.fetch(  # dialplan.lua, public "single" mode: the global half
        "SELECT dialplan_xml FROM v_dialplans p WHERE p.dialplan_context LIKE '%public%'"
        f" AND p.domain_uuid IS NULL AND {hosts} AND {enabled} ORDER BY p.dialplan_order",
        "pbx-host",
    )
    multiple = await pbx.conn.fetch(
        f"SELECT dialplan_xml FROM v_dialplans p WHERE p.dialplan_context = 'public'"
        f" AND {hosts} AND {enabled} ORDER BY p.dialplan_order",
        "pbx-host",
    )
    domain_context = await pbx.conn.fetch(
        "SELECT dialplan_xml FROM v_dialplans p WHERE p.dialplan_context IN"
        f" ($1, '${{domain_name}}', 'global') AND {enabled}",
        DOMAIN,
    )
    assert len(single) == len(multiple) == 1 and domain_context == []

    document = (
        '<document type="freeswitch/xml"><section name="dialplan" description="">'
        f'<context name="public" destination_number="2001" hostname="pbx-host">'
        f"{single[0]['dialplan_xml']}</context></section></document>"
    )
    extension = parse(document).find("./section/context/extension")
    assert extension is not None
    assert extension.get("uuid") == str(dialplan_uuid_for("2001"))
    served = ET.tostring(extension, encoding="unicode")
    assert hunt(served, twilio_call())[-1] == BRIDGE
    assert hunt(served, twilio_call(**{"sip_h_X-Twilio-AccountSid": OTHER_SID})) == FORBIDDEN_403


async def test_dry_run_changes_nothing(pbx: Pbx) -> None:
    empty = await pbx.snapshot()
    report = await apply_dialplan(pbx.dsn, ROUTE, dry_run=True, acl=True)
    assert await pbx.snapshot() == empty
    assert report.changes == {}
    sql = report.sql()
    assert "INSERT INTO v_dialplans" in sql and "ON CONFLICT (dialplan_uuid)" in sql
    assert "INSERT INTO v_access_control_nodes" in sql
    # The flag literals follow the schema flavour.
    assert ("false, " if pbx.flavour == "boolean" else "'false', ") in sql

    await apply_dialplan(pbx.dsn, ROUTE, acl=True)
    applied = await pbx.snapshot()
    await apply_dialplan(pbx.dsn, RouteSettings(OTHER_SID, DOMAIN), dry_run=True, acl=True)
    await rollback_dialplan(pbx.dsn, "2001", dry_run=True, acl=True)
    assert await pbx.snapshot() == applied


async def test_rollback_removes_exactly_our_rows(pbx: Pbx) -> None:
    other_uuid, admin_node = uuid.uuid4(), uuid.uuid4()
    # Someone else's inbound route with a detail, and an admin's own node for a Twilio CIDR.
    await pbx.conn.execute(
        "INSERT INTO v_dialplans (dialplan_uuid, dialplan_context, dialplan_name, dialplan_xml,"
        f" dialplan_order, dialplan_enabled) VALUES ($1, 'public', 'carrier', '<extension/>',"
        f" 100, {pbx.true})",
        other_uuid,
    )
    await pbx.conn.execute(
        "INSERT INTO v_dialplan_details (dialplan_detail_uuid, dialplan_uuid, dialplan_detail_tag)"
        " VALUES ($1, $2, 'condition')",
        uuid.uuid4(), other_uuid,
    )
    await pbx.conn.execute(
        "INSERT INTO v_access_control_nodes (access_control_node_uuid, access_control_uuid,"
        " node_type, node_cidr) SELECT $1, access_control_uuid, 'allow', '54.172.60.0/30'"
        " FROM v_access_controls",
        admin_node,
    )
    before = await pbx.snapshot()
    report = await apply_dialplan(pbx.dsn, ROUTE, acl=True)
    assert report.changes["v_access_control_nodes insert"] == 7  # the admin's CIDR is not doubled
    again = await apply_dialplan(pbx.dsn, ROUTE, acl=True)
    assert again.changes["v_access_control_nodes insert"] == 0
    cidrs = await pbx.conn.fetch("SELECT node_cidr FROM v_access_control_nodes")
    assert sorted(r[0] for r in cidrs) == sorted(n.cidr for n in load_acl_nodes())

    removed = await rollback_dialplan(pbx.dsn, "2001", acl=True)
    assert removed.existed and removed.changes["v_dialplans delete"] == 1
    assert await pbx.snapshot() == before
    assert (await rollback_dialplan(pbx.dsn, "2001", acl=True)).changes["v_dialplans delete"] == 0


async def test_reapplying_with_another_domain_updates_the_same_row(pbx: Pbx) -> None:
    other = uuid.uuid4()
    await pbx.conn.execute(
        "INSERT INTO v_domains (domain_uuid, domain_name) VALUES ($1, 'b.example.org')", other
    )
    await apply_dialplan(pbx.dsn, ROUTE)
    await apply_dialplan(pbx.dsn, RouteSettings(SID, "b.example.org"))
    row = await pbx.our_row()
    assert "user/2001@b.example.org" in row["dialplan_xml"]
    assert f"domain_uuid={other}" in row["dialplan_xml"]


async def test_unknown_domain_or_missing_acl_list_fail_without_writing(pbx: Pbx) -> None:
    before = await pbx.snapshot()
    with pytest.raises(DialplanError, match="not found in v_domains"):
        await apply_dialplan(pbx.dsn, RouteSettings(SID, "nope.example.com"))
    await pbx.conn.execute("DELETE FROM v_access_controls")
    with pytest.raises(DialplanError, match="providers"):
        await apply_dialplan(pbx.dsn, ROUTE, acl=True)
    assert await pbx.snapshot() == before


async def test_cli_dry_run_apply_and_rollback(pbx: Pbx, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--dsn", pbx.dsn, "--account-sid", SID, "--domain", DOMAIN, "--extension", "2001"]

    async def run(*extra: str) -> int:
        # main() calls asyncio.run, so give it a thread of its own.
        return await asyncio.to_thread(cli_main, [*common, "--no-flush", *extra])

    assert await run("--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("BEGIN;") and "dry run, nothing changed" in out
    assert (await pbx.snapshot())["v_dialplans"] == []

    assert await run() == 0
    assert "applied dialplan twilio_to_agent_2001" in capsys.readouterr().out
    await pbx.our_row()
    assert await run("--rollback") == 0
    assert (await pbx.snapshot())["v_dialplans"] == []

    assert await run("--domain", "nope.example.com") == 1
    assert "not found in v_domains" in capsys.readouterr().err
