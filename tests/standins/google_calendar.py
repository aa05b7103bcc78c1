"""A Google stand-in: OAuth2 (consent redirect + token endpoint) and a Calendar v3 REST subset.

One server plays the three Google hosts, so point the settings at it:
    GOOGLE_OAUTH_BASE_URL    = standin.url                 (/o/oauth2/v2/auth)
    GOOGLE_TOKEN_URL         = standin.url + "/token"
    GOOGLE_CALENDAR_BASE_URL = standin.url + "/calendar/v3"

The consent page approves at once and redirects to `redirect_uri?code=…&state=…` (the user is
`login_hint`, or `default_user`). Access tokens live `token_ttl` seconds; `expire_tokens()` ends
them all now, so a 401 exercises the refresh path. `revoke_refresh_tokens()` makes refreshes fail
with `invalid_grant`. "primary" is the token owner's calendar. Data is in memory, per instance.
Faults: `fail_next(status)` (Google-shaped error), `hang_next()`, `latency`.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.standins import HttpStandIn, json_response

CALENDAR = "/calendar/v3/calendars/{calendar}"


@dataclass
class Token:
    user: str
    expires_at: float
    scope: str


def google_error(status: int, message: str, reason: str = "") -> dict[str, Any]:
    statuses = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        410: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason or "error"}],
            "status": statuses.get(status, "UNKNOWN"),
        }
    }


def parse_time(value: str) -> datetime:
    """RFC 3339 date-time (or a plain date, as all-day events use) as an aware datetime."""
    if len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def event_start(event: dict[str, Any]) -> datetime:
    start = event.get("start", {})
    return parse_time(start.get("dateTime") or start.get("date"))


def event_end(event: dict[str, Any]) -> datetime:
    end = event.get("end", {})
    return parse_time(end.get("dateTime") or end.get("date"))


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GoogleCalendarStandIn(HttpStandIn):
    name = "google_calendar"

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        client_id: str | None = None,  # None: any client
        client_secret: str | None = None,
        token_ttl: float = 3600.0,
        default_user: str = "caller@example.com",
    ) -> None:
        super().__init__(port=port, latency=latency)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.default_user = default_user
        self.calendars: dict[str, dict[str, dict[str, Any]]] = {}  # calendar → event id → event
        self.access_tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.codes: dict[str, tuple[str, str, str]] = {}  # code → (user, redirect_uri, scope)
        self.consents: list[dict[str, str]] = []  # query of every consent request

    # Test API -------------------------------------------------------------------------------

    def issue_tokens(self, user: str | None = None, scope: str = "") -> dict[str, Any]:
        """Skip the consent dance: tokens for `user`, shaped like the token endpoint's answer."""
        return self._grant(user or self.default_user, scope, refresh=True)

    def expire_tokens(self) -> None:
        for token in self.access_tokens.values():
            token.expires_at = 0.0

    def revoke_refresh_tokens(self) -> None:
        self.refresh_tokens.clear()

    def add_event(self, calendar: str, event: dict[str, Any]) -> dict[str, Any]:
        return self._store(calendar, dict(event))

    def events(self, calendar: str | None = None) -> list[dict[str, Any]]:
        """Live (not deleted) events of a calendar, by default the default user's."""
        stored = self.calendars.get(calendar or self.default_user, {}).values()
        return [e for e in stored if e.get("status") != "cancelled"]

    def error_body(self, status: int) -> Any:
        return google_error(status, "injected fault", "backendError")

    # Routes ---------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/o/oauth2/v2/auth", self._consent)
        app.router.add_post("/token", self._token)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_get(CALENDAR + "/events", self._list)
        app.router.add_post(CALENDAR + "/events", self._insert)
        app.router.add_get(CALENDAR + "/events/{event}", self._get)
        app.router.add_patch(CALENDAR + "/events/{event}", self._patch)
        app.router.add_put(CALENDAR + "/events/{event}", self._put)
        app.router.add_delete(CALENDAR + "/events/{event}", self._delete)
        app.router.add_post("/calendar/v3/freeBusy", self._free_busy)

    # OAuth ----------------------------------------------------------------------------------

    async def _consent(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.consents.append(q)
        redirect_uri = q.get("redirect_uri")
        if not redirect_uri or q.get("response_type") != "code" or not q.get("client_id"):
            return web.Response(status=400, text="Error 400: invalid_request")
        if self.client_id and q["client_id"] != self.client_id:
            return web.Response(status=401, text="Error 401: invalid_client")
        code = "4/" + secrets.token_urlsafe(24)
        self.codes[code] = (
            q.get("login_hint") or self.default_user,
            redirect_uri,
            q.get("scope", ""),
        )
        params = {"code": code, "scope": q.get("scope", "")}
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in redirect_uri else "?"
        raise web.HTTPFound(redirect_uri + sep + urlencode(params))

    def _grant(self, user: str, scope: str, *, refresh: bool) -> dict[str, Any]:
        access = "ya29." + secrets.token_urlsafe(32)
        self.access_tokens[access] = Token(user, time.monotonic() + self.token_ttl, scope)
        answer: dict[str, Any] = {
            "access_token": access,
            "expires_in": int(self.token_ttl),
            "scope": scope,
            "token_type": "Bearer",
        }
        if refresh:
            token = "1//" + secrets.token_urlsafe(32)
            self.refresh_tokens[token] = Token(user, float("inf"), scope)
            answer["refresh_token"] = token
        return answer

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if client_id is None and request.headers.get("Authorization", "").startswith("Basic "):
            import base64

            raw = base64.b64decode(request.headers["Authorization"][6:]).decode()
            client_id, _, client_secret = raw.partition(":")
        if not client_id or (self.client_id and client_id != self.client_id):
            return json_response(
                {"error": "invalid_client", "error_description": "Unauthorized"}, 401
            )
        if self.client_secret and client_secret != self.client_secret:
            return json_response(
                {"error": "invalid_client", "error_description": "Unauthorized"}, 401
            )
        grant = form.get("grant_type")
        if grant == "authorization_code":
            entry = self.codes.pop(form.get("code", ""), None)
            if entry is None or entry[1] != form.get("redirect_uri"):
                return json_response(
                    {"error": "invalid_grant", "error_description": "Bad Request"}, 400
                )
            return json_response(self._grant(entry[0], entry[2], refresh=True))
        if grant == "refresh_token":
            token = self.refresh_tokens.get(form.get("refresh_token", ""))
            if token is None:
                return json_response(
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                    400,
                )
            return json_response(self._grant(token.user, token.scope, refresh=False))
        return json_response({"error": "unsupported_grant_type"}, 400)

    async def _revoke(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token") or request.query.get("token", ""))
        self.refresh_tokens.pop(token, None)
        self.access_tokens.pop(token, None)
        return web.Response(status=200)

    # Calendar -------------------------------------------------------------------------------

    def _user(self, request: web.Request) -> str | web.Response:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = self.access_tokens.get(value) if scheme == "Bearer" else None
        if token is None or token.expires_at <= time.monotonic():
            return json_response(
                google_error(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                    "authError",
                ),
                401,
                **{"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        return token.user

    def _calendar(self, request: web.Request, user: str) -> str:
        calendar = request.match_info["calendar"]
        return user if calendar == "primary" else calendar

    def _store(self, calendar: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("id", uuid.uuid4().hex)
        now = _stamp()
        event.setdefault("created", now)
        event["updated"] = now
        event.update(
            kind="calendar#event",
            etag=f'"{time.monotonic_ns()}"',
            status=event.get("status", "confirmed"),
            htmlLink=f"https://www.google.com/calendar/event?eid={event['id']}",
            organizer=event.get("organizer", {"email": calendar, "self": True}),
        )
        self.calendars.setdefault(calendar, {})[event["id"]] = event
        return event

    def _validate(self, event: dict[str, Any]) -> web.Response | None:
        for side in ("start", "end"):
            times = event.get(side)
            if not isinstance(times, dict) or not (times.get("dateTime") or times.get("date")):
                return json_response(google_error(400, "Missing end time.", "required"), 400)
        try:
            if event_end(event) < event_start(event):
                return json_response(
                    google_error(400, "The specified time range is empty.", "timeRangeEmpty"), 400
                )
        except ValueError:
            return json_response(google_error(400, "Invalid value", "invalid"), 400)
        return None

    async def _list(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        q = request.query
        calendar = self._calendar(request, user)
        if q.get("orderBy") == "startTime" and q.get("singleEvents") != "true":
            return json_response(
                google_error(
                    400,
                    "The requested ordering is not available for the particular query.",
                    "invalid",
                ),
                400,
            )
        items = list(self.calendars.get(calendar, {}).values())
        if q.get("showDeleted") != "true":
            items = [e for e in items if e.get("status") != "cancelled"]
        if "timeMin" in q:  # events ending after timeMin
            low = parse_time(q["timeMin"])
            items = [e for e in items if event_end(e) > low]
        if "timeMax" in q:  # events starting before timeMax
            high = parse_time(q["timeMax"])
            items = [e for e in items if event_start(e) < high]
        if "q" in q:
            needle = q["q"].lower()
            items = [
                e
                for e in items
                if any(
                    needle in str(e.get(k, "")).lower()
                    for k in ("summary", "description", "location")
                )
            ]
        if q.get("orderBy") == "startTime":
            items.sort(key=event_start)
        elif q.get("orderBy") == "updated":
            items.sort(key=lambda e: e["updated"])
        size = min(int(q.get("maxResults", 250)), 2500)
        offset = int(q.get("pageToken", "0") or 0)
        page = items[offset : offset + size]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{time.monotonic_ns()}"',
            "summary": calendar,
            "updated": _stamp(),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [],
            "items": page,
        }
        if offset + size < len(items):
            body["nextPageToken"] = str(offset + size)
        else:
            body["nextSyncToken"] = secrets.token_urlsafe(12)
        return json_response(body)

    async def _insert(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        event = await request.json()
        if (invalid := self._validate(event)) is not None:
            return invalid
        event.pop("id", None)
        return json_response(self._store(self._calendar(request, user), event))

    def _find(self, request: web.Request, user: str) -> dict[str, Any] | web.Response:
        events = self.calendars.get(self._calendar(request, user), {})
        event = events.get(request.match_info["event"])
        if event is None:
            return json_response(google_error(404, "Not Found", "notFound"), 404)
        if event.get("status") == "cancelled":
            return json_response(google_error(410, "Resource has been deleted", "deleted"), 410)
        return event

    async def _get(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        found = self._find(request, user)
        return found if isinstance(found, web.Response) else json_response(found)

    async def _patch(self, request: web.Request) -> web.Response:
        return await self._change(request, replace=False)

    async def _put(self, request: web.Request) -> web.Response:
        return await self._change(request, replace=True)

    async def _change(self, request: web.Request, *, replace: bool) -> web.Response:
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        found = self._find(request, user)
        if isinstance(found, web.Response):
            return found
        changes = await request.json()
        keep = {k: found[k] for k in ("id", "created")}
        updated = {**(changes if replace else {**found, **changes}), **keep}
        if (invalid := self._validate(updated)) is not None:
            return invalid
        return json_response(self._store(self._calendar(request, user), updated))

    async def _delete(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        found = self._find(request, user)
        if isinstance(found, web.Response):
            return found
        found["status"] = "cancelled"  # Google keeps a tombstone: a second delete is a 410
        found["updated"] = _stamp()
        return web.Response(status=204)

    async def _free_busy(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        body = await request.json()
        low, high = parse_time(body["timeMin"]), parse_time(body["timeMax"])
        calendars: dict[str, Any] = {}
        for item in body.get("items", []):
            cal = user if item["id"] == "primary" else item["id"]
            busy = [
                {
                    "start": max(event_start(e), low).isoformat().replace("+00:00", "Z"),
                    "end": min(event_end(e), high).isoformat().replace("+00:00", "Z"),
                }
                for e in sorted(self.calendars.get(cal, {}).values(), key=event_start)
                if event_end(e) > low
                and event_start(e) < high
                and e.get("transparency") != "transparent"
                and e.get("status") != "cancelled"
            ]
            calendars[item["id"]] = {"busy": busy}
        return json_response(
            {
                "kind": "calendar#freeBusy",
                "timeMin": body["timeMin"],
                "timeMax": body["timeMax"],
                "calendars": calendars,
            }
        )

    # Command line ---------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--latency", type=float, default=0.0)
        parser.add_argument("--client-id", default=None)
        parser.add_argument("--client-secret", default=None)
        parser.add_argument("--token-ttl", type=float, default=3600.0)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> GoogleCalendarStandIn:
        return cls(
            port=args.port,
            latency=args.latency,
            client_id=args.client_id,
            client_secret=args.client_secret,
            token_ttl=args.token_ttl,
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        GoogleCalendarStandIn.main()
