"""`voice-app mcp` (voice_app.tools.cli.run_mcp) as a real subprocess: tokens minted on the
command line, tools over stdio, and streamable HTTP with per-user bearer tokens (401 without).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

pytest.register_assert_rewrite("tests.tools_fixtures")
from tests.tools_fixtures import ToolWorld, text_of  # noqa: E402
from voice_app.tools.auth import mint_token  # noqa: E402

pytest_plugins = ["tests.tools_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "voice_app.tools.cli"]


@pytest.fixture(scope="module")
def cli_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ENVIRONMENT": "test",
        "SECRET_KEY": "test-secret-key",
        "PUBLIC_BASE_URL": "http://127.0.0.1:8080",
        "VOICE_APP_MCP_TOKEN": "",
    }


async def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode().strip(), err.decode()


async def _token(world: ToolWorld, tenant: str = "a") -> str:
    """A fresh token for the tenant's caller. Minted per test, just before use: a concurrent test
    session flushing the shared Redis database cannot pull it away mid-module."""
    t = world.tenant(tenant)
    session = await mint_token(world.services.state, str(t.id), str(t.caller.id), ttl_seconds=120)
    return session.token


async def test_token_command_stores_an_mcp_session(
    tool_world: ToolWorld, cli_env: dict[str, str]
) -> None:
    (code, minted, err), (unknown_code, _, unknown_err) = await asyncio.gather(
        _run(cli_env, "token", "--account", tool_world.a.caller.account_number),
        _run(cli_env, "token", "--account", "999999999999"),
    )
    assert code == 0, err
    session = await tool_world.services.state.get_session(minted, kind="mcp")
    assert session is not None
    assert (session.tenant_id, session.subject_id) == (
        str(tool_world.a.id),
        str(tool_world.a.caller.id),
    )
    assert unknown_code == 1 and "no account" in unknown_err


async def test_stdio_lists_and_calls_tools_as_the_tokens_user(
    tool_world: ToolWorld, cli_env: dict[str, str]
) -> None:
    env = {
        **cli_env,
        "VOICE_APP_MCP_TOKEN": await _token(tool_world),
    }  # the environment variable form
    params = StdioServerParameters(command=CLI[0], args=CLI[1:], env=env, cwd=ROOT)
    async with Client(params) as client:
        listed = await client.list_tools()
        assert len(listed.tools) >= 38
        result = await client.call_tool("user_get_my_profile", {})
        assert result.structured_content["profile"]["id"] == str(tool_world.a.caller.id)
        foreign = await tool_world.b.todo()
        result = await client.call_tool("todo_get", {"todo_id": str(foreign)})
        assert result.is_error and "No todo" in text_of(result)


async def test_stdio_refuses_to_start_without_a_valid_token(cli_env: dict[str, str]) -> None:
    code, out, err = await _run(cli_env, "--token", "not-a-real-token")
    assert code == 2 and out == "" and "no valid token" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
async def http_server(cli_env: dict[str, str]) -> AsyncIterator[str]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "--http",
        "--port",
        str(port),
        env=cli_env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(150):
                if proc.returncode is not None:
                    raise RuntimeError("voice-app mcp --http exited early")
                try:
                    await http.get(url)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def _bearer(url: str, token: str) -> Any:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return streamable_http_client(url, http_client=http)


_INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-real-token", "Basic dXNlcjpwdw=="])
async def test_http_without_a_valid_bearer_token_is_401(
    http_server: str, authorization: str | None
) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient() as http:
        response = await http.post(http_server, json=_INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_http_calls_tools_as_the_bearer_tokens_user(
    tool_world: ToolWorld, http_server: str
) -> None:
    minted = await _token(tool_world)
    t = tool_world.a
    title = f"over http {uuid.uuid4().hex[:6]}"
    async with Client(_bearer(http_server, minted)) as client:
        listed = await client.list_tools()
        assert len(listed.tools) >= 38
        result = await client.call_tool("todo_create", {"title": title})
        assert not result.is_error, text_of(result)
        foreign = await tool_world.b.todo()
        missing = await client.call_tool("todo_get", {"todo_id": str(foreign)})
        assert missing.is_error
        no_call = await client.call_tool("transfer_to_agent", {"reason": "needs a person"})
        assert no_call.is_error and "no phone call" in text_of(no_call)
    owner = await t.owner.fetchval("SELECT owner_id FROM todos WHERE title = $1", title)
    assert owner == t.caller.id

    async def audited() -> list[str]:  # the audit row is written alongside the answer
        rows = await t.owner.fetch(
            "SELECT outcome FROM tool_calls WHERE user_id = $1 AND call_sid IS NULL"
            " AND tool = 'todo_create' AND arguments::text LIKE $2",
            t.caller.id,
            f"%{title}%",
        )
        return [r["outcome"] for r in rows]

    async with asyncio.timeout(5):
        while not (outcomes := await audited()):
            await asyncio.sleep(0.02)
    assert outcomes == ["ok"]


async def test_http_call_session_tokens_bind_the_call(
    tool_world: ToolWorld, http_server: str
) -> None:
    t = tool_world.b
    call_sid = f"CA{uuid.uuid4().hex}"
    session = await tool_world.services.state.create_session(
        kind="call",
        tenant_id=str(t.id),
        subject_id=str(t.caller.id),
        ttl_seconds=60,
        call_sid=call_sid,
    )
    async with Client(_bearer(http_server, session.token)) as client:
        result = await client.call_tool("transfer_to_agent", {"reason": "asked for a human"})
        assert result.structured_content["status"] == "transferring"
        profile = await client.call_tool("user_get_my_profile", {})
        assert profile.structured_content["profile"]["id"] == str(t.caller.id)
    state = await tool_world.services.state.get_call_state(call_sid)
    assert state["transfer_requested"] == "asked for a human"


async def test_http_token_is_revoked_with_its_session(
    tool_world: ToolWorld, http_server: str
) -> None:
    t = tool_world.a
    session = await tool_world.services.state.create_session(
        kind="mcp", tenant_id=str(t.id), subject_id=str(t.caller.id), ttl_seconds=60
    )
    headers = {
        "Authorization": f"Bearer {session.token}",
        "Accept": "application/json, text/event-stream",
    }
    async with httpx.AsyncClient() as http:
        await tool_world.services.state.end_session(session.token)
        response = await http.post(http_server, json=_INITIALIZE, headers=headers)
    assert response.status_code == 401
