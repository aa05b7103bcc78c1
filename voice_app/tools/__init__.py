"""The MCP tools: todos, teams, users, calendar and transfer, acting as the caller of the call.

Entry points (import from the modules; this package imports nothing, to stay cheap):
* `session.open_tools_session` / `session.open_tools_client`: the agent's per-call session;
* `server.build_server`: the MCPServer itself;
* `cli.run_mcp`: `voice-app mcp` (stdio, streamable HTTP, token minting);
* `calendar_oauth.blueprint`: linking a Google Calendar from the web page;
* `users.change_pin`: the keypad side of a PIN change.
"""
