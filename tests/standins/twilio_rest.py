"""A Twilio REST stand-in: the Calls resource of API 2010-04-01, with basic auth.

    async with TwilioRestStandIn(account_sid=SID, auth_token=TOKEN) as twilio:
        http = LocalAsyncTwilioHttpClient(twilio.url)        # voice_app.twilio_http
        client = Client(SID, TOKEN, http_client=http)
        await client.calls("CA…").update_async(twiml="<Response>…</Response>")
        twilio.updates  # [("CA…", {"Twiml": "<Response>…</Response>"})]

Unknown call SIDs are treated as live in-progress calls unless `auto_create_calls=False`. A call
that is no longer in progress refuses new TwiML (400, code 21220) as Twilio does.
Faults: `fail_next(status)` (Twilio-shaped error), `hang_next()`, `latency`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.utils
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.standins import HttpStandIn, json_response

API = "/2010-04-01/Accounts/{account}"
LIVE = {"queued", "ringing", "in-progress"}


def _now() -> str:
    return email.utils.formatdate(usegmt=False).replace("-0000", "+0000")


@dataclass
class Call:
    sid: str
    account_sid: str
    status: str = "in-progress"
    from_: str = "+15005550006"
    to: str = "+15005550001"
    twiml: str | None = None
    url: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)  # every update's form

    def resource(self) -> dict[str, Any]:
        now = _now()
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "status": self.status,
            "direction": "inbound",
            "from": self.from_,
            "from_formatted": self.from_,
            "to": self.to,
            "to_formatted": self.to,
            "date_created": now,
            "date_updated": now,
            "start_time": now,
            "end_time": now if self.status not in LIVE else None,
            "duration": "0" if self.status not in LIVE else None,
            "parent_call_sid": None,
            "answered_by": None,
            "annotation": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "phone_number_sid": None,
            "trunk_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "uri": uri + ".json",
            "subresource_uris": {
                "notifications": uri + "/Notifications.json",
                "recordings": uri + "/Recordings.json",
                "events": uri + "/Events.json",
            },
        }


def error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class TwilioRestStandIn(HttpStandIn):
    name = "twilio_rest"

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        account_sid: str | None = None,  # None: any account
        auth_token: str | None = None,  # None: any non-empty password
        auto_create_calls: bool = True,
    ) -> None:
        super().__init__(port=port, latency=latency)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.credentials: dict[str, str] = {}  # extra username → password (API keys SK…)
        self.auto_create_calls = auto_create_calls
        self.calls: dict[str, Call] = {}
        self.updates: list[tuple[str, dict[str, str]]] = []  # (call sid, form) per update

    def add_call(self, sid: str, *, status: str = "in-progress", **kwargs: Any) -> Call:
        call = Call(sid, self.account_sid or "AC" + "0" * 32, status, **kwargs)
        self.calls[sid] = call
        return call

    def error_body(self, status: int) -> Any:
        codes = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}
        return error(status, codes.get(status, 20001), "injected fault")

    # Server ---------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        base = API + "/Calls"
        app.router.add_post(base + ".json", self._create)
        app.router.add_get(base + "/{call}.json", self._fetch)
        app.router.add_post(base + "/{call}.json", self._update)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        with contextlib.suppress(ValueError):
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            if user in self.credentials:
                return password == self.credentials[user]
            if self.account_sid and user != self.account_sid:
                return False
            return bool(password) and (self.auth_token is None or password == self.auth_token)
        return False

    def _check(self, request: web.Request) -> web.Response | None:
        if not self._authorized(request):
            return json_response(error(401, 20003, "Authenticate"), 401)
        account = request.match_info["account"]
        if self.account_sid and account != self.account_sid:
            return json_response(
                error(404, 20404, f"The requested resource {request.path} was not found"), 404
            )
        return None

    def _call(self, request: web.Request) -> Call | None:
        sid = request.match_info["call"]
        if sid not in self.calls and self.auto_create_calls and re.fullmatch(r"CA\w+", sid):
            self.calls[sid] = Call(sid, request.match_info["account"])
        return self.calls.get(sid)

    async def _fetch(self, request: web.Request) -> web.Response:
        if (refused := self._check(request)) is not None:
            return refused
        call = self._call(request)
        if call is None:
            return json_response(
                error(404, 20404, f"The requested resource {request.path} was not found"), 404
            )
        return json_response(call.resource())

    async def _update(self, request: web.Request) -> web.Response:
        if (refused := self._check(request)) is not None:
            return refused
        call = self._call(request)
        if call is None:
            return json_response(
                error(404, 20404, f"The requested resource {request.path} was not found"), 404
            )
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.updates.append((call.sid, form))
        call.history.append(form)
        if ("Twiml" in form or "Url" in form) and call.status not in LIVE:
            return json_response(
                error(400, 21220, "Call is not in-progress. Cannot redirect."), 400
            )
        if "Twiml" in form:
            call.twiml = form["Twiml"]
        if "Url" in form:
            call.url = form["Url"]
        if "Status" in form:
            call.status = form["Status"]
        return json_response(call.resource())

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._check(request)) is not None:
            return refused
        form = {k: str(v) for k, v in (await request.post()).items()}
        for required in ("To", "From"):
            if required not in form:
                return json_response(
                    error(400, 21201 if required == "To" else 21213, f"No '{required}' number"),
                    400,
                )
        sid = "CA" + uuid.uuid4().hex
        call = Call(sid, request.match_info["account"], "queued", form["From"], form["To"])
        call.twiml, call.url = form.get("Twiml"), form.get("Url")
        self.calls[sid] = call
        return json_response(call.resource(), 201)

    # Command line ---------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--latency", type=float, default=0.0)
        parser.add_argument("--account-sid", default=None)
        parser.add_argument("--auth-token", default=None)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> TwilioRestStandIn:
        return cls(
            port=args.port,
            latency=args.latency,
            account_sid=args.account_sid,
            auth_token=args.auth_token,
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        TwilioRestStandIn.main()
