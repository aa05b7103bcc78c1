"""Is the agent's extension registered at the PBX right now? True, False, or None (cannot ask).

Two ways to ask, in order of preference:
- FreeSWITCH's event socket (PBX_EVENT_SOCKET=host:port, PBX_EVENT_SOCKET_PASSWORD): plain-TCP
  ESL, `auth`, then `api sofia status profile internal reg <ext>`, parsed below;
- an HTTP lookup (PBX_AVAILABILITY_URL) answering JSON `{"registered": true|false}`.
Each has a 2 s budget. None means "could not tell": the caller must not hear "nobody is there".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from voice_app.config import Settings

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
ESL_DEFAULT_PORT = 8021
SOFIA_PROFILE = "internal"  # FusionPBX's profile with the WSS binding (PROTOCOLS.md G7)


class EslError(Exception):
    """The event socket refused us or spoke something we do not understand."""


# --- the ESL wire format ---------------------------------------------------------------------


async def read_esl_message(reader: asyncio.StreamReader) -> tuple[dict[str, str], str]:
    """One message: `Name: value` lines, a blank line, then Content-Length bytes of body."""
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if not raw:
            raise EslError("the event socket closed")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if headers:
                break
            continue  # blank lines between messages
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    length = int(headers.get("Content-Length", "0") or 0)
    body = (await reader.readexactly(length)).decode("utf-8", "replace") if length else ""
    return headers, body


async def esl_api(host: str, port: int, password: str, command: str) -> str:
    """Run one `api` command on FreeSWITCH's inbound event socket and return its output."""
    if any(c in password + command for c in "\r\n"):
        raise EslError("newlines are not allowed in an ESL password or command")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        headers, _ = await read_esl_message(reader)
        if headers.get("Content-Type") != "auth/request":
            raise EslError(f"expected auth/request, got {headers.get('Content-Type')!r}")
        writer.write(f"auth {password}\n\n".encode())
        await writer.drain()
        headers, _ = await read_esl_message(reader)
        if not headers.get("Reply-Text", "").startswith("+OK"):
            raise EslError("the event socket refused the password")
        writer.write(f"api {command}\n\n".encode())
        await writer.drain()
        while True:  # skip anything else (we subscribe to no events, but be liberal)
            headers, body = await read_esl_message(reader)
            if headers.get("Content-Type") == "api/response":
                break
        writer.write(b"exit\n\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        return body
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- reading FreeSWITCH's answer (pure) ------------------------------------------------------


def _host(domain: str) -> str:
    return domain.rsplit(":", 1)[0].lower() if domain.count(":") == 1 else domain.lower()


def parse_sofia_registrations(output: str, extension: str, domain: str = "") -> bool | None:
    """From `sofia status profile internal reg <ext>`: is `extension@domain` registered and
    reachable? None when the output is an error or not a registration listing. The filter of
    that command is a substring match (2001 also finds 20010), so users are compared exactly."""
    text = output.strip()
    if not text.startswith("Registrations:"):
        return None
    want_host = _host(domain) if domain else ""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields.setdefault(name.strip(), value.strip())
        user, _, host = fields.get("User", "").partition("@")
        if user != extension or (want_host and host.lower() != want_host):
            continue
        registered = fields.get("Status", "").startswith("Registered")
        unreachable = fields.get("Ping-Status", "").lower().startswith("unreachable")
        if registered and not unreachable:
            return True
    return False


# --- the checks -------------------------------------------------------------------------------


def _event_socket_address(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        return value.strip(), ESL_DEFAULT_PORT
    return host.strip("[]"), int(port)


async def esl_extension_registered(settings: Settings) -> bool | None:
    assert settings.pbx_event_socket
    try:
        host, port = _event_socket_address(settings.pbx_event_socket)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            output = await esl_api(
                host,
                port,
                settings.pbx_event_socket_password or "",
                f"sofia status profile {SOFIA_PROFILE} reg {settings.agent_extension}",
            )
    except (OSError, TimeoutError, EslError, ValueError) as error:
        log.warning("PBX event socket check failed: %s", error or type(error).__name__)
        return None
    return parse_sofia_registrations(output, settings.agent_extension, settings.pbx_sip_domain)


async def http_extension_registered(url: str) -> bool | None:
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
            response.raise_for_status()
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        log.warning("PBX availability lookup failed: %s", type(error).__name__)
        return None
    registered = body.get("registered") if isinstance(body, dict) else None
    return registered if isinstance(registered, bool) else None


async def check_agent_availability(settings: Settings) -> bool | None:
    """True/False when the PBX said; None when it could not be asked (or is not configured)."""
    if settings.pbx_event_socket:
        return await esl_extension_registered(settings)
    if settings.pbx_availability_url:
        return await http_extension_registered(settings.pbx_availability_url)
    return None


class PbxAvailability:
    """`check_agent_availability` behind the tools' `AgentAvailability` interface."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def is_available(self) -> bool | None:
        return await check_agent_availability(self.settings)
