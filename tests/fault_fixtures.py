"""Helpers for the production-readiness tests: a live app wired to misbehaving stand-ins, a private
Redis that can be killed and restarted, a TCP proxy in front of PostgreSQL that can refuse
connections, and a scripted caller whose Twilio socket can be made to send garbage.

Nothing here touches the shared PostgreSQL or Redis servers' lifecycle: faults are injected
between the app and a private copy (Redis) or through a proxy (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import sentry_sdk

from tests.live_app import LiveApp, free_port, live_app
from tests.standins.anthropic import AnthropicStandIn
from tests.standins.deepgram import DeepgramStandIn, tone
from tests.standins.sentry import SentryStandIn
from voice_app.config import Settings
from voice_app.db.migrate import migrate
from voice_app.db.seed import DEMO_USERS
from voice_app.simulator.call import CallConfig, run_call
from voice_app.simulator.caller import Step
from voice_app.simulator.report import CallReport
from voice_app.streams.audio import audioop

DEMO = DEMO_USERS[0]


# Sentry: process-global, so one stand-in for a whole module ---------------------------------


@asynccontextmanager
async def sentry_standin() -> AsyncIterator[SentryStandIn]:
    """A Sentry ingest stand-in; on exit the SDK client is closed and the loop un-patched."""
    loop = asyncio.get_running_loop()
    task_factory = loop.get_task_factory()
    async with SentryStandIn() as standin:
        try:
            yield standin
        finally:
            await asyncio.to_thread(sentry_sdk.get_client().close, 2.0)
            sentry_sdk.get_global_scope().set_client(None)
            loop.set_task_factory(task_factory)


def quiet_aiohttp_tracing() -> None:
    """The stand-ins are aiohttp servers in this process: tracing them would send a transaction
    per envelope the Sentry stand-in receives, forever."""
    sentry_sdk.get_client().integrations.pop("aiohttp", None)


async def sentry_flush() -> None:
    await asyncio.to_thread(sentry_sdk.flush, 3.0)


def error_kinds(events: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(str(e.get("tags", {}).get("error.kind", "?")) for e in events)


# The app under test with its providers ------------------------------------------------------


@dataclass
class Rig:
    """One live app and the stand-ins it talks to."""

    app: LiveApp
    deepgram: DeepgramStandIn
    claude: AnthropicStandIn
    sentry: SentryStandIn | None

    @property
    def settings(self) -> Settings:
        return self.app.settings


@asynccontextmanager
async def rig(
    settings: Settings, sentry: SentryStandIn | None, **overrides: Any
) -> AsyncIterator[Rig]:
    """The real app on a free port, hearing and speaking through the Deepgram stand-in and
    thinking with Claude through the Anthropic stand-in; errors go to the Sentry stand-in
    (start_observability in before_serving initialises the SDK from SENTRY_DSN)."""
    async with (
        DeepgramStandIn(api_key="dg-test", endpointing_ms=300, ms_per_char=8) as deepgram,
        AnthropicStandIn(api_key="sk-test", ttft=0.01, default_reply="Okay.") as claude,
        live_app(
            settings,
            deepgram_api_key="dg-test",
            deepgram_url=deepgram.url,
            anthropic_api_key="sk-test",
            anthropic_base_url=claude.url,
            sentry_dsn=sentry.dsn() if sentry else None,
            sentry_traces_sample_rate=0.0,  # errors are what these tests count
            idle_reprompt_seconds=60.0,  # no reprompts muddling the turns
            **overrides,
        ) as app,
    ):
        quiet_aiohttp_tracing()
        yield Rig(app, deepgram, claude, sentry)


# A caller ------------------------------------------------------------------------------------


def tone_wav(path: Path, ms: int = 600) -> str:
    """A burst the Deepgram stand-in hears as one utterance (its words are queued separately)."""
    pcm = audioop.ulaw2lin(tone(8 * ms), 2)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)
    return str(path)


def call_config(rig: Rig, steps: list[Step], **overrides: Any) -> CallConfig:
    config = CallConfig.from_settings(rig.settings, steps=steps, record=False)
    base: dict[str, Any] = {
        "account": DEMO.account_number,
        "pin": DEMO.pin,
        "quiet_ms": 400,
        "reply_timeout_s": 20.0,
        "max_duration_s": 60.0,
    }
    return dataclasses.replace(config, **{**base, **overrides})


@dataclass
class CallResult:
    report: CallReport
    messages: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)  # Sentry events of the call
    extra: dict[str, Any] = field(default_factory=dict)  # what a scenario saw on the way

    def said(self, role: str) -> list[str]:
        return [str(m["content"]) for m in self.messages if m["role"] == role]

    def answered(self, turn: int) -> bool:
        """The caller heard audio in reply to their `turn`-th line (0 = the greeting)."""
        turns = self.report.turns
        return len(turns) > turn and turns[turn].first_arrival is not None

    def describe(self) -> str:
        lines = [f"outcome={self.report.outcome} {self.report.detail}"]
        lines += [f"  {m['role']}: {m['content']!s:.120}" for m in self.messages]
        lines += [f"  sentry: {kind}" for kind in error_kinds(self.events)]
        lines += [f"  turn {t.index}: arrival={t.first_arrival}" for t in self.report.turns]
        return "\n".join(lines)


async def call_rows(database_url: str, call_sid: str) -> tuple[list[dict[str, Any]], ...]:
    """The call's messages and tool calls, read as the schema owner (past row-level security)."""
    conn = await asyncpg.connect(database_url)
    try:
        messages = await conn.fetch(
            "SELECT id, role, content, interrupted FROM messages WHERE call_sid = $1 ORDER BY id",
            call_sid,
        )
        tools = await conn.fetch(
            "SELECT tool, outcome, detail FROM tool_calls WHERE call_sid = $1 ORDER BY id",
            call_sid,
        )
    finally:
        await conn.close()
    return [dict(r) for r in messages], [dict(r) for r in tools]


async def place_call(
    rig: Rig, database_url: str, steps: list[Step], **overrides: Any
) -> CallResult:
    """One call from the simulator, then what PostgreSQL and Sentry hold about it."""
    report = await run_call(call_config(rig, steps, **overrides))
    await asyncio.sleep(0.3)  # the call's last writes and its cleanup
    await sentry_flush()
    messages, tools = await call_rows(database_url, report.call_sid)
    reported = rig.sentry.events if rig.sentry else []
    events = [e for e in reported if e.get("tags", {}).get("call_sid") == report.call_sid]
    return CallResult(report, messages, tools, events)


async def when(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    """Wait for a condition of the running call (a fault is armed at the right moment)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


# Private state stores ------------------------------------------------------------------------


@asynccontextmanager
async def private_database(admin_url: str) -> AsyncIterator[str]:
    """A freshly migrated database of its own on the shared server, dropped afterwards: for
    tests that compare every table before and after, away from other tests' late writes."""
    name = f"va_private_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
        try:
            await migrate(url)
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# A private Redis that can die --------------------------------------------------------------


class PrivateRedis:
    """`redis-server` on a free port with an append-only file, so a restart keeps the data (as a
    managed Redis does) and only the outage is tested."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH"
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.directory),
            "save": "",  # no snapshots: the append-only file, fsynced per write, keeps the data
            "appendonly": "yes",
            "appendfsync": "always",
            "loglevel": "warning",
        }
        argv = [binary, *(arg for name, value in options.items() for arg in (f"--{name}", value))]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-command, as a crashed or rebooted host does."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None

    async def restart(self, down_for: float) -> None:
        self.kill()
        await asyncio.sleep(down_for)
        await self.start()


# A TCP proxy in front of PostgreSQL that can refuse ------------------------------------------


class TcpProxy:
    """127.0.0.1:port → upstream. `outage()` cuts every open connection and refuses (closes at
    once) new ones until `restore()`: what the app sees when the database restarts."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.refusing = False
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def outage(self) -> None:
        self.refusing = True
        self._cut_all()

    def restore(self) -> None:
        self.refusing = False

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.transport.abort()

        tasks = [
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ]
        self._pipes.update(tasks)
        for task in tasks:
            task.add_done_callback(self._pipes.discard)
