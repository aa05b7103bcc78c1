"""Local stand-ins for the outside services, speaking each provider's wire protocol on 127.0.0.1.

Tests point the real SDKs at these servers; benchmarks start them as processes. Every stand-in is an
async context manager with `.port`, `.url` and a log of what it received, configurable latency, and
fault knobs a test can flip mid-run:

    async with AnthropicStandIn() as claude:      # tests.standins.anthropic
        claude.reply("Hello there.")
        claude.fail_next("overloaded")

    python -m tests.standins.deepgram --port 8701  # prints "READY <url>" once listening

This module holds the shared plumbing: the base class, the aiohttp base for HTTP stand-ins (latency,
`fail_next(status)`, `hang_next()`, request log) and the command-line runner.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

HOST = "127.0.0.1"  # loopback only, always


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 3.0, interval: float = 0.01
) -> Any:
    """Poll until `predicate()` is truthy and return its value; TimeoutError after `timeout`."""
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(interval)
        return value


class StandIn:
    """Start/stop, the context manager protocol and the command-line runner."""

    name = "standin"

    def __init__(self, *, port: int = 0) -> None:
        self.requested_port = port
        self.port = 0
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> Self:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def sleep_or_stop(self, seconds: float) -> None:
        """Sleep, but wake early when the server stops (hanging handlers never block shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # Command line ---------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Extra options for `python -m`; override per stand-in."""

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> StandIn:
        return cls(port=args.port)

    def ready_line(self) -> str:
        return f"READY {self.url}"

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        """Run as a process until SIGINT/SIGTERM; prints one READY line once listening."""
        parser = argparse.ArgumentParser(prog=f"python -m tests.standins.{cls.name}")
        parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
        cls.add_arguments(parser)
        args = parser.parse_args(argv)

        async def run() -> None:
            standin = cls.from_arguments(args)
            async with standin:
                print(standin.ready_line(), flush=True)
                done = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, done.set)
                await done.wait()

        asyncio.run(run())


@dataclass
class RecordedRequest:
    """One HTTP request as a stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class HttpFault:
    status: int | None = None  # None means hang (never answer)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class HttpStandIn(StandIn):
    """An aiohttp server with request logging, latency and status/hang faults.

    `latency` seconds are added before every answer. `fail_next(status)` answers the next request
    with that status (provider-shaped body from `error_body`), `hang_next()` never answers it.
    """

    def __init__(self, *, port: int = 0, latency: float = 0.0) -> None:
        super().__init__(port=port)
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self._faults: list[HttpFault] = []
        self._runner: web.AppRunner | None = None

    # Subclasses -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        return {"error": {"code": status, "message": "injected fault"}}

    # Faults ---------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `count` requests with `status` (and a provider-shaped error body)."""
        for _ in range(count):
            self._faults.append(HttpFault(status, body, dict(headers or {})))

    def hang_next(self, count: int = 1) -> None:
        """Never answer the next `count` requests (until the stand-in stops)."""
        for _ in range(count):
            self._faults.append(HttpFault(None))

    # Plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), dict(request.headers), body
            )
        )
        if self.latency:
            await self.sleep_or_stop(self.latency)
        if self._faults:
            fault = self._faults.pop(0)
            if fault.status is None:
                await self.sleep_or_stop(3600)
                raise web.HTTPServiceUnavailable()
            payload = fault.body if fault.body is not None else self.error_body(fault.status)
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return web.Response(
                status=fault.status,
                text=text,
                content_type="application/json",
                headers=fault.headers,
            )
        return await handler(request)

    async def start(self) -> Self:
        self._stopping.clear()
        app = web.Application(middlewares=[self._middleware], client_max_size=50 * 1024 * 1024)
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.requested_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def json_response(payload: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(payload), content_type="application/json", headers=headers
    )
