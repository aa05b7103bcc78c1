"""The agent's way in: one in-process MCP client session per call, acting as that call's caller.

    async with open_tools_session(services, call_context) as tools:
        tools.specs                       # [ToolSpec(name, description, input_schema), ...]
        text, is_error = await tools.call("todo_list", {"status": "open"})

    async with open_tools_client(services, call_context) as client:   # a bound mcp.Client
        McpToolbox(client)                # voice_app.agent.toolbox

The identity is bound when the session connects (see `server.py`), so nothing the model sends,
and nothing the calling task does later, can change whom the tools act for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from voice_app.agent.base import CallContext
from voice_app.agent.toolbox import ToolSpec
from voice_app.services import Services
from voice_app.tools.core import Identity, ToolServices, binding_identity
from voice_app.tools.server import ConnectionState, build_server


class ToolOutcome(NamedTuple):
    text: str
    is_error: bool


class ToolSession:
    def __init__(self, client: Client, specs: list[ToolSpec]) -> None:
        self._client = client
        self.specs = specs

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolOutcome:
        """Run a tool. Failures come back as text for the model (is_error=True), never raised."""
        try:
            result = await self._client.call_tool(name, arguments or {})
        except MCPError as error:
            return ToolOutcome(f"The tool could not be run: {error}", True)
        text = "\n".join(getattr(block, "text", "") for block in result.content)
        return ToolOutcome(text, bool(result.is_error))


_SPECS: WeakKeyDictionary[MCPServer[ConnectionState], list[ToolSpec]] = WeakKeyDictionary()


def tool_services(services: Services) -> ToolServices:
    """The process's ToolServices, made once from the app's Services (closed with them)."""
    existing = services.extras.get("tool_services")
    if not isinstance(existing, ToolServices):
        existing = ToolServices.create(
            services.settings,
            services.db,
            services.state,
            availability=services.extras.get("agent_availability"),
        )
        services.extras["tool_services"] = existing
    return existing


def tools_server(services: Services) -> MCPServer[ConnectionState]:
    """One MCPServer per process; connections are what carry a caller."""
    server = services.extras.get("tools_server")
    if not isinstance(server, MCPServer):
        shared = tool_services(services)
        server = build_server(lambda: shared, issuer_url=services.settings.public_base_url)
        services.extras["tools_server"] = server
    return server


@asynccontextmanager
async def open_tools_client(
    services: Services | MCPServer[ConnectionState], call: CallContext
) -> AsyncIterator[Client]:
    """An entered in-process `mcp.Client` whose tools act as `call`'s tenant and user."""
    server = services if isinstance(services, MCPServer) else tools_server(services)
    async with AsyncExitStack() as stack:
        client = Client(server)
        with binding_identity(Identity.of(call.tenant_id, call.user_id, call.call_sid)):
            await stack.enter_async_context(client)  # the server's lifespan captures it here
        yield client


@asynccontextmanager
async def open_tools_session(
    services: Services | MCPServer[ConnectionState], call: CallContext
) -> AsyncIterator[ToolSession]:
    """Like `open_tools_client`, with the tool list fetched and a `(text, is_error)` call."""
    server = services if isinstance(services, MCPServer) else tools_server(services)
    async with open_tools_client(server, call) as client:
        specs = _SPECS.get(server)
        if specs is None:  # the same for every connection: list them once per server
            listed = await client.list_tools()
            specs = [ToolSpec(t.name, t.description or "", t.input_schema) for t in listed.tools]
            _SPECS[server] = specs
        yield ToolSession(client, specs)

