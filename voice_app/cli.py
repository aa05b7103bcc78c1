"""The `voice-app` command: serve, demo, migrate, seed, call, mcp, pbx."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from voice_app.config import ConfigError, Settings
from voice_app.logs import configure_logging

log = logging.getLogger("voice_app")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Subcommands with their own parsers take the rest of the line untouched.
    if argv[:1] == ["mcp"]:
        from voice_app.tools.cli import run_mcp

        return run_mcp(argv[1:])
    if argv[:2] == ["pbx", "apply-dialplan"]:
        from voice_app.pbx.cli import main as pbx_main

        return pbx_main(argv[2:])
    if argv[:1] == ["call"]:
        from voice_app.simulator.cli import main as call_main

        return call_main(argv[1:])

    parser = argparse.ArgumentParser(prog="voice-app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve the app (embedded services if unset)")
    demo = sub.add_parser("demo", help="like serve, plus demo data and the local-mode browser page")
    for p in (serve, demo):
        p.add_argument("--host")
        p.add_argument("--port", type=int)
    sub.add_parser("migrate", help="apply pending database migrations")
    seed = sub.add_parser("seed", help="create demo data (safe to run twice)")
    seed.add_argument("--demo", action="store_true", required=True)
    sub.add_parser("check-config", help="validate settings and print the engines in use")
    sub.add_parser("mcp", help="run the MCP tools server (see `voice-app mcp --help`)")
    sub.add_parser("call", help="the caller simulator (see `voice-app call --help`)")
    sub.add_parser("pbx", help="`voice-app pbx apply-dialplan --help`")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)

    if args.command == "check-config":
        for job, engine in settings.engines().items():
            print(f"{job:15} {engine}")
        return 0
    with resolved_services(settings) as settings:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "seed":
            return asyncio.run(_seed(settings))
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        if args.command == "demo":
            overrides["local_mode"] = True
        settings = dataclasses.replace(settings, **overrides)
        if asyncio.run(_migrate(settings)) != 0:
            return 1
        if args.command == "demo" and asyncio.run(_seed(settings)) != 0:
            return 1
        return serve_forever(settings)


@contextmanager
def resolved_services(settings: Settings) -> Iterator[Settings]:
    """Settings with DATABASE_URL/REDIS_URL filled in, starting embedded services if unset."""
    if settings.database_url and settings.redis_url:
        yield settings
        return
    from voice_app.embedded import embedded_services

    with embedded_services(
        Path(settings.data_dir),
        need_postgres=not settings.database_url,
        need_redis=not settings.redis_url,
    ) as services:
        yield dataclasses.replace(
            settings,
            database_url=settings.database_url or services.database_url,
            redis_url=settings.redis_url or services.redis_url,
        )


async def _migrate(settings: Settings) -> int:
    from voice_app.db.migrate import MigrationError, migrate

    assert settings.database_url
    try:
        applied = await migrate(settings.database_url)
    except (MigrationError, OSError) as error:
        log.error("migration failed: %s", error)
        return 1
    log.info(
        "migrations: %s", ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "up to date"
    )
    return 0


async def _seed(settings: Settings) -> int:
    from voice_app.db.seed import DEMO_AGENT, seed_demo

    assert settings.database_url
    report = await seed_demo(settings.database_url)
    if report.created:
        print("Demo users (shown once; account number / PIN):")
        for user in report.created:
            print(f"  {user.display_name:14} account {user.account_number}  PIN {user.pin}")
    if report.agent_created:
        print(f"Demo agent console login: {DEMO_AGENT[0]} / {DEMO_AGENT[2]}")
    if not report.created and not report.agent_created:
        print("Demo data already present.")
    return 0


def serve_forever(settings: Settings) -> int:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from voice_app.app import create_app
    from voice_app.memory import map_large_blocks, release_free_heap_periodically
    from voice_app.shutdown import drain

    map_large_blocks()  # before anything allocates: PIN hashing's buffers are then returned
    app = create_app(settings)

    background: list[asyncio.Task[None]] = []

    @app.before_serving  # after create_app's own start-up (services, warm-up): runs last
    async def freeze_start_up_objects() -> None:
        # Move everything start-up made out of the collector's reach: full collections over
        # ~330k import-time objects paused the loop for 0.2-0.4 s and broke live audio.
        gc.collect()
        gc.freeze()
        background.append(asyncio.create_task(release_free_heap_periodically()))

    @app.after_serving
    async def stop_background() -> None:
        for task in background:
            task.cancel()

    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = 10  # our own drain runs first and ends the calls
    config.websocket_ping_interval = 20
    config.websocket_max_message_size = 64 * 1024  # the codec's own limit; Twilio's are ~300 B
    config.keep_alive_timeout = 75
    config.accesslog = None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def drained() -> None:
            await stop.wait()
            services = app.extensions.get("services")
            if services is not None:
                await drain(services, settings.shutdown_grace_seconds)

        log.info("serving on %s (public URL %s)", config.bind[0], settings.public_base_url)
        await serve(app, config, shutdown_trigger=drained)  # type: ignore[arg-type]

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
