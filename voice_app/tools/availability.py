"""Is a human agent free to take a call? Asked of the PBX behind a small interface.

The HTTP checker GETs PBX_AVAILABILITY_URL and reads `{"available": true|false}`; a FreeSWITCH
event-socket checker can replace it later. `None` means "could not ask", which the assistant must
not present as "nobody is there".
"""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

log = logging.getLogger(__name__)


class AgentAvailability(Protocol):
    async def is_available(self) -> bool | None:
        """True/False when the PBX answered; None when it could not be asked."""
        ...


class UnknownAvailability:
    """No PBX to ask (not configured)."""

    async def is_available(self) -> bool | None:
        return None


class HttpAgentAvailability:
    def __init__(self, url: str, http: httpx.AsyncClient, *, timeout: float = 2.0) -> None:
        self.url = url
        self.http = http
        self.timeout = timeout

    async def is_available(self) -> bool | None:
        try:
            response = await self.http.get(self.url, timeout=self.timeout)
            response.raise_for_status()
            available = response.json().get("available")
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            log.warning("agent availability check failed: %s", type(error).__name__)
            return None
        return available if isinstance(available, bool) else None
