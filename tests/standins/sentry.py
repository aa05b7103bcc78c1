"""A Sentry ingest stand-in: `POST /api/{project_id}/envelope/` (and the legacy `/store/`).

    async with SentryStandIn() as sentry:
        sentry_sdk.init(dsn=sentry.dsn(), traces_sample_rate=1.0)
        ...; sentry_sdk.flush()
        await sentry.wait_for_events(1)
        sentry.events, sentry.transactions, sentry.items  # parsed payloads

Bodies may be gzip, deflate or plain. The envelope format: a header line (JSON), then per item a
header line (JSON, optional `length`) and a payload (`length` bytes, or up to the next newline).
Faults: `fail_next(429, headers={"Retry-After": "60"})`, `fail_next(500)`, `hang_next()`, `latency`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.standins import HttpStandIn, json_response, wait_for


@dataclass
class EnvelopeItem:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Envelope:
    project_id: str
    headers: dict[str, Any]
    items: list[EnvelopeItem]
    auth: str  # the X-Sentry-Auth header (or sentry_key query)


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[EnvelopeItem]]:
    """Split an envelope into its header and items."""
    header_line, _, rest = body.partition(b"\n")
    headers = json.loads(header_line) if header_line.strip() else {}
    items: list[EnvelopeItem] = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        if not item_line.strip():
            continue
        item_headers = json.loads(item_line)
        length = item_headers.get("length")
        if length is not None:
            payload, rest = rest[:length], rest[length:]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append(EnvelopeItem(item_headers, payload))
    return headers, items


def decode_body(body: bytes, encoding: str) -> bytes:
    """Undo Content-Encoding, if aiohttp has not already (it inflates gzip/deflate itself)."""
    encoding = encoding.lower().strip()
    if body.startswith(b"\x1f\x8b"):
        return gzip.decompress(body)
    if encoding == "deflate" and body[:1] == b"\x78":
        return zlib.decompress(body)
    if encoding == "br" and not body.lstrip().startswith(b"{"):
        import brotli  # type: ignore[import-not-found]  # only if the SDK found it too

        return bytes(brotli.decompress(body))
    return body


class SentryStandIn(HttpStandIn):
    name = "sentry"

    def __init__(self, *, port: int = 0, latency: float = 0.0, public_key: str = "public") -> None:
        super().__init__(port=port, latency=latency)
        self.public_key = public_key
        self.envelopes: list[Envelope] = []

    def dsn(self, project_id: int = 1) -> str:
        return f"http://{self.public_key}@127.0.0.1:{self.port}/{project_id}"

    # Parsed views ---------------------------------------------------------------------------

    @property
    def items(self) -> list[EnvelopeItem]:
        return [item for envelope in self.envelopes for item in envelope.items]

    def payloads(self, item_type: str) -> list[dict[str, Any]]:
        return [item.json() for item in self.items if item.type == item_type]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Errors and messages."""
        return self.payloads("event")

    @property
    def transactions(self) -> list[dict[str, Any]]:
        return self.payloads("transaction")

    async def wait_for_events(self, count: int = 1, timeout: float = 3.0) -> list[dict[str, Any]]:
        await wait_for(lambda: len(self.events) >= count, timeout)
        return self.events

    async def wait_for_transactions(
        self, count: int = 1, timeout: float = 3.0
    ) -> list[dict[str, Any]]:
        await wait_for(lambda: len(self.transactions) >= count, timeout)
        return self.transactions

    def error_body(self, status: int) -> Any:
        return {"detail": "injected fault"}

    # Server ---------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/{project}/envelope/", self._envelope)
        app.router.add_post("/api/{project}/store/", self._store)

    def _auth(self, request: web.Request) -> str | None:
        """The auth the SDK sent, if its key matches ("Sentry sentry_key=…, sentry_version=7")."""
        auth = request.headers.get("X-Sentry-Auth", "")
        fields = dict(
            part.strip().split("=", 1)
            for part in auth.removeprefix("Sentry ").split(",")
            if "=" in part
        )
        key = request.query.get("sentry_key") or fields.get("sentry_key")
        if key != self.public_key:
            return None
        return auth or f"sentry_key={key}"

    async def _body(self, request: web.Request) -> bytes:
        return decode_body(await request.read(), request.headers.get("Content-Encoding", ""))

    async def _envelope(self, request: web.Request) -> web.Response:
        auth = self._auth(request)
        if auth is None:
            return json_response({"detail": "bad sentry DSN public key"}, 401)
        try:
            headers, items = parse_envelope(await self._body(request))
        except (ValueError, OSError, zlib.error) as exc:
            return json_response({"detail": f"invalid envelope: {exc}"}, 400)
        self.envelopes.append(Envelope(request.match_info["project"], headers, items, auth))
        return json_response({"id": headers.get("event_id") or uuid.uuid4().hex})

    async def _store(self, request: web.Request) -> web.Response:
        auth = self._auth(request)
        if auth is None:
            return json_response({"detail": "bad sentry DSN public key"}, 401)
        payload = await self._body(request)
        event = json.loads(payload)
        item = EnvelopeItem({"type": event.get("type", "event")}, payload)
        self.envelopes.append(Envelope(request.match_info["project"], {}, [item], auth))
        return json_response({"id": event.get("event_id") or uuid.uuid4().hex})

    # Command line ---------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--latency", type=float, default=0.0)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> SentryStandIn:
        return cls(port=args.port, latency=args.latency)

    def ready_line(self) -> str:
        return f"READY {self.url} dsn={self.dsn()}"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        SentryStandIn.main()
