"""`voice-app mcp`: the tools as a standalone MCP server, for MCP clients outside a call.

    voice-app mcp [--token T]                  stdio; acts as the token's user
                                               (or $VOICE_APP_MCP_TOKEN)
    voice-app mcp --http [--host H] [--port N] streamable HTTP at /mcp; every request brings
                                               `Authorization: Bearer <token>`
    voice-app mcp token --account N [--ttl S]  mint a token acting as that account's user

Tokens are Redis sessions of kind "mcp" (or a live call's "call" session). DATABASE_URL and
REDIS_URL must be set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from voice_app.config import ConfigError, Settings
from voice_app.db import users
from voice_app.db.pool import Database
from voice_app.state.store import StateStore
from voice_app.tools.auth import identity_for_token, mint_token
from voice_app.tools.core import ToolServices, binding_identity
from voice_app.tools.server import build_server

TOKEN_ENV = "VOICE_APP_MCP_TOKEN"  # noqa: S105 - a variable name, not a secret


def run_mcp(argv: list[str]) -> int:
    # stdout may be the MCP stream: logs go to stderr, before the SDK configures its own.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if argv[:1] == ["token"]:
        token_args = _token_parser().parse_args(argv[1:])
        return _with_settings(lambda s: anyio.run(_mint, s, token_args.account, token_args.ttl))
    args = _server_parser().parse_args(argv)
    if args.http:
        return _with_settings(lambda s: anyio.run(_serve_http, s, args.host, args.port))
    token = args.token or os.environ.get(TOKEN_ENV)
    return _with_settings(lambda s: anyio.run(_serve_stdio, s, token))


def _server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-app mcp", description="Serve the MCP tools.")
    parser.add_argument("--token", help=f"act as this token's user (stdio; default ${TOKEN_ENV})")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP, not stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    return parser


def _token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-app mcp token", description="Mint an MCP token.")
    parser.add_argument("--account", required=True, help="the user's account number")
    parser.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default one day)")
    return parser


def _with_settings(run: Callable[[Settings], int]) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"voice-app mcp: {error}", file=sys.stderr)
        return 2
    if not settings.database_url or not settings.redis_url:
        print("voice-app mcp: set DATABASE_URL and REDIS_URL", file=sys.stderr)
        return 2
    return run(settings)


@asynccontextmanager
async def _services(settings: Settings) -> AsyncIterator[ToolServices]:
    assert settings.database_url and settings.redis_url
    db = await Database.connect(settings.database_url, min_size=1, max_size=5)
    state = StateStore.from_url(settings.redis_url)
    services = ToolServices.create(settings, db, state)
    try:
        yield services
    finally:
        await services.aclose()
        await state.close()
        await db.close()


async def _serve_stdio(settings: Settings, token: str | None) -> int:
    async with _services(settings) as services:
        identity = await identity_for_token(services.state, token)
        if identity is None:
            print(
                "voice-app mcp: no valid token (give --token or set "
                f"{TOKEN_ENV}; mint one with `voice-app mcp token --account N`)",
                file=sys.stderr,
            )
            return 2
        server = build_server(lambda: services, issuer_url=settings.public_base_url)
        with binding_identity(identity):  # stdio is one connection: the lifespan captures it
            await server.run_stdio_async()
    return 0


async def _serve_http(settings: Settings, host: str, port: int) -> int:
    import uvicorn  # only this mode needs it

    async with _services(settings) as services:
        server = build_server(lambda: services, issuer_url=settings.public_base_url)
        # Stateless JSON: any process can answer any request, so it scales out like the app.
        app = server.streamable_http_app(host=host, stateless_http=True, json_response=True)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()
    return 0


async def _mint(settings: Settings, account: str, ttl: int) -> int:
    if not 60 <= ttl <= 30 * 24 * 3600:
        print("voice-app mcp token: --ttl must be between 60 seconds and 30 days", file=sys.stderr)
        return 2
    assert settings.database_url and settings.redis_url
    db = await Database.connect(settings.database_url, min_size=1, max_size=1)
    state = StateStore.from_url(settings.redis_url)
    try:
        async with db.anonymous() as conn:
            match = await users.account_for_sign_in(conn, account)
        if match is None:
            print(f"voice-app mcp token: no account {account}", file=sys.stderr)
            return 1
        session = await mint_token(state, str(match.tenant_id), str(match.user_id), ttl_seconds=ttl)
        print(session.token)
        return 0
    finally:
        await state.close()
        await db.close()


if __name__ == "__main__":
    sys.exit(run_mcp(sys.argv[1:]))
