"""Graceful shutdown: stop taking calls, let live calls finish, then say goodbye to the rest.

On SIGTERM the process first reports not-ready (so the load balancer stops sending), refuses new
streams, waits up to SHUTDOWN_GRACE_SECONDS for live calls to end on their own, then asks each
remaining call to finish its sentence, say goodbye and hang up. Only then does Hypercorn stop.
"""

from __future__ import annotations

import asyncio
import logging

from voice_app.services import Services
from voice_app.streams.session import calls_finishing

log = logging.getLogger(__name__)

GOODBYE_GRACE_S = 15.0  # long enough for a goodbye line to play out
CLEANUP_GRACE_S = 12.0  # ended calls closing sockets and flushing their call log


async def drain(services: Services, grace_s: float) -> int:
    """Returns how many calls had to be ended by the server."""
    services.extras["draining"] = True
    live = services.extras.setdefault("live_calls", set())
    loop = asyncio.get_running_loop()
    log.info("draining: %d live call(s), waiting up to %.0f s", len(live), grace_s)
    deadline = loop.time() + grace_s
    while live and loop.time() < deadline:
        await asyncio.sleep(0.25)
    remaining = list(live)
    await asyncio.gather(*(call.request_goodbye() for call in remaining), return_exceptions=True)
    deadline = loop.time() + GOODBYE_GRACE_S
    while live and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if live:
        log.warning("%d call(s) still live after their goodbye; closing anyway", len(live))
    await calls_finishing(CLEANUP_GRACE_S)  # their logs flushed before the pool closes
    return len(remaining)
