"""`voice-app pbx apply-dialplan`: install or remove the Twilio → agent route in FusionPBX."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg

from voice_app.config import ConfigError, Settings
from voice_app.pbx.apply import (
    ApplyReport,
    DialplanError,
    RouteSettings,
    apply_dialplan,
    dsn_from_config,
    load_acl_nodes,
    load_template,
    read_fusionpbx_config,
    render_acl_sql,
    rollback_dialplan,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-app pbx apply-dialplan",
        description="Write the Twilio → agent dialplan (XML and detail rows) into FusionPBX's "
        "database in one transaction, then flush FusionPBX's dialplan cache on this host. "
        "Safe to run again: the rows have fixed ids.",
    )
    parser.add_argument(
        "--dsn",
        help="FusionPBX's PostgreSQL, e.g. postgresql://fusionpbx@127.0.0.1/fusionpbx "
        "(password via PGPASSWORD). Default: database.0.* in /etc/fusionpbx/config.conf",
    )
    parser.add_argument("--account-sid", help="Twilio account SID (default: TWILIO_ACCOUNT_SID)")
    parser.add_argument("--extension", help="agent extension (default: AGENT_EXTENSION, 2001)")
    parser.add_argument(
        "--domain", help="FusionPBX domain of the extension (default: PBX_SIP_DOMAIN without port)"
    )
    parser.add_argument(
        "--acl",
        action="store_true",
        help="also add Twilio's signalling CIDRs to the `providers` ACL "
        "(with --rollback: remove the ones this tool added)",
    )
    parser.add_argument("--rollback", action="store_true", help="remove exactly our rows")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the SQL and cache steps; change nothing"
    )
    parser.add_argument(
        "--no-flush", action="store_true", help="skip the cache flush (e.g. not on the PBX)"
    )
    parser.add_argument("--template", type=Path, help="dialplan template (default: the repo's)")
    parser.add_argument(
        "--print-acl-sql",
        action="store_true",
        help="print idempotent SQL for the providers ACL and exit (no database needed)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.print_acl_sql:
            print(render_acl_sql(load_acl_nodes()), end="")
            return 0
        dsn = args.dsn or dsn_from_config(read_fusionpbx_config())
        if not dsn:
            print("no database: pass --dsn (no /etc/fusionpbx/config.conf here)", file=sys.stderr)
            return 2
        settings = None
        if not (args.extension and (args.rollback or (args.account_sid and args.domain))):
            settings = Settings.from_env()
        extension = args.extension or (settings.agent_extension if settings else "2001")
        flush = not args.no_flush
        if args.rollback:
            report = asyncio.run(
                rollback_dialplan(
                    dsn, extension, dry_run=args.dry_run, acl=args.acl, flush_cache=flush
                )
            )
        else:
            sid = args.account_sid or (settings.twilio_account_sid if settings else None)
            if not sid:
                print("no SID: pass --account-sid or set TWILIO_ACCOUNT_SID", file=sys.stderr)
                return 2
            domain = args.domain or (settings.pbx_sip_domain.split(":")[0] if settings else "")
            route = RouteSettings(sid, domain, extension)
            template = load_template(args.template) if args.template else None
            report = asyncio.run(
                apply_dialplan(
                    dsn, route, dry_run=args.dry_run, acl=args.acl, flush_cache=flush,
                    template=template,
                )
            )
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except (DialplanError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        print(f"apply-dialplan failed: {error}", file=sys.stderr)
        return 1
    _print(report)
    return 0


def _print(report: ApplyReport) -> None:
    if report.dry_run:
        print(report.sql())
    print(report.summary())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
