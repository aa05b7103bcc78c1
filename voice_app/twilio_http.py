"""Twilio HTTP clients that send REST calls to another base URL (TWILIO_API_BASE_URL).

The twilio library has no base-URL option; every request goes to https://api.twilio.com (or an
edge/region host). These subclasses rewrite that prefix, so tests and benchmarks can point the real
client at a local stand-in:

    http = LocalAsyncTwilioHttpClient(settings.twilio_api_base_url)
    client = Client(sid, token, http_client=http)
    await client.calls(call_sid).update_async(twiml=str(response))
"""

from __future__ import annotations

import base64
import re

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

_TWILIO_HOST = re.compile(r"^https://[A-Za-z0-9.-]*\.twilio\.com(?=/|$)")


def rewrite_twilio_url(url: str, base_url: str) -> str:
    """https://api.twilio.com/2010-04-01/… → {base_url}/2010-04-01/…; other URLs pass through."""
    return _TWILIO_HOST.sub(base_url.rstrip("/"), url, count=1)


class LocalTwilioHttpClient(TwilioHttpClient):
    """The synchronous client, pointed at `base_url`."""

    def __init__(self, base_url: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.base_url = base_url

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        return super().request(
            method,
            rewrite_twilio_url(url, self.base_url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


class LocalAsyncTwilioHttpClient(AsyncTwilioHttpClient):
    """The asyncio client (for `*_async` methods), pointed at `base_url`.

    Create it inside the running loop (it opens an aiohttp session) and `await client.close()`.
    Credentials go in an Authorization header: the parent hands aiohttp its deprecated `auth=`,
    which warns on every request.
    """

    def __init__(self, base_url: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.base_url = base_url

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the base class's signature)
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        return await super().request(
            method,
            rewrite_twilio_url(url, self.base_url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
