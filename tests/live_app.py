"""Serve the real app with Hypercorn on 127.0.0.1 inside a test, for real-socket tests."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from voice_app.app import create_app
from voice_app.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class LiveApp:
    app: Quart
    settings: Settings
    url: str

    @property
    def services(self) -> Any:
        return self.app.extensions["services"]


@asynccontextmanager
async def live_app(settings: Settings, **overrides: Any) -> AsyncIterator[LiveApp]:
    # free_port() closes its socket before Hypercorn binds, and in between the kernel may hand the
    # port to some outgoing connection as its local port: then pick another.
    for attempt in range(5):
        port = free_port()
        live_settings = dataclasses.replace(
            settings, port=port, public_base_url=f"http://127.0.0.1:{port}", **overrides
        )
        app = create_app(live_settings)
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.graceful_timeout = 2
        stop = asyncio.Event()
        task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        for _ in range(200):  # until the socket answers and start-up ran
            await asyncio.sleep(0.025)
            if "services" in app.extensions or task.done():
                break
        error = task.exception() if task.done() else None
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE and attempt < 4:
            continue
        break
    try:
        yield LiveApp(app, live_settings, f"http://127.0.0.1:{port}")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
