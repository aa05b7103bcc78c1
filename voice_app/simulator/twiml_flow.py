"""Twilio's webhook side of a call: signed POSTs, TwiML read verb by verb. Parsing is pure.

Requests are signed for the URL the app believes it is at (PUBLIC_BASE_URL + path) but sent to
wherever the simulator was told to connect (`--url`): the two differ behind tunnels and proxies.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


# --- URLs and signatures ---------------------------------------------------------------------


def rebase(url: str, connect_base: str) -> str:
    """`url` with scheme and host swapped for `connect_base`'s (ws/wss follow http/https)."""
    target = urlsplit(connect_base)
    parts = urlsplit(url)
    scheme = target.scheme
    if parts.scheme in ("ws", "wss"):
        scheme = "wss" if target.scheme == "https" else "ws"
    return urlunsplit((scheme, target.netloc, parts.path, parts.query, ""))


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


# --- TwiML -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Gather:
    action: str
    method: str
    prompt: str  # the text of the <Say>s inside it
    input: str = "dtmf"
    action_on_empty_result: bool = False


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class StreamTarget:
    url: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connect:
    stream: StreamTarget | None
    action: str | None
    method: str


@dataclass(frozen=True, slots=True)
class Dial:
    target: str


@dataclass(frozen=True, slots=True)
class Other:
    name: str  # Pause, Play, … : noted in the timeline, otherwise skipped


Verb = Say | Gather | Redirect | Hangup | Connect | Dial | Other


class TwimlError(ValueError):
    pass


def parse_twiml(text: str, doc_url: str) -> list[Verb]:
    """The verbs of a TwiML document; relative URLs resolved against `doc_url`."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - our own app's TwiML, loopback
    except ET.ParseError as error:
        raise TwimlError(f"not XML: {error}") from None
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, expected <Response>")
    return [_verb(el, doc_url) for el in root]


def _verb(el: ET.Element, doc_url: str) -> Verb:
    method = el.get("method", "POST").upper()
    match el.tag:
        case "Say":
            return Say(_text(el))
        case "Gather":
            prompt = " ".join(_text(child) for child in el if child.tag == "Say")
            return Gather(
                action=urljoin(doc_url, el.get("action", "")),  # no action: the same document
                method=method,
                prompt=prompt,
                input=el.get("input", "dtmf"),
                action_on_empty_result=el.get("actionOnEmptyResult", "false") == "true",
            )
        case "Redirect":
            return Redirect(urljoin(doc_url, _text(el)), method)
        case "Hangup" | "Reject":
            return Hangup()
        case "Connect":
            stream = next((child for child in el if child.tag == "Stream"), None)
            target = None
            if stream is not None:
                params = {
                    p.get("name", ""): p.get("value", "") for p in stream if p.tag == "Parameter"
                }
                target = StreamTarget(stream.get("url", ""), params)
            action = el.get("action")
            return Connect(target, urljoin(doc_url, action) if action else None, method)
        case "Dial":
            return Dial(" ".join(t.strip() for t in el.itertext() if t.strip()))
    return Other(el.tag)


def _text(el: ET.Element) -> str:
    return " ".join("".join(el.itertext()).split())


GatherKind = Literal["account", "pin", "unknown"]


def gather_kind(gather: Gather) -> GatherKind:
    """What a Gather asks for, read from its prompt, else its action URL."""
    for text in (gather.prompt.lower(), urlsplit(gather.action).path.lower()):
        if "account" in text:
            return "account"
        if "pin" in text:
            return "pin"
    return "unknown"


def gather_result(digits: str, gather: Gather, mode: Literal["dtmf", "speech"]) -> dict[str, str]:
    """The form fields Twilio adds when the caller answers `gather` with `digits`."""
    if mode == "speech" and "speech" in gather.input:
        return {"SpeechResult": " ".join(digits) + ".", "Confidence": "0.92"}
    return {"Digits": digits, "FinishedOnKey": "#"}


# --- Webhooks --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallParams:
    call_sid: str
    account_sid: str
    from_number: str
    to_number: str

    def form(self, status: str) -> dict[str, str]:
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.from_number,
            "Caller": self.from_number,
            "To": self.to_number,
            "Called": self.to_number,
            "Direction": "inbound",
            "CallStatus": status,
            "ApiVersion": "2010-04-01",
        }


class WebhookError(RuntimeError):
    pass


class Webhooks:
    """Signed requests to the app, as Twilio makes them."""

    def __init__(
        self, http: httpx.AsyncClient, connect_base: str, auth_token: str, call: CallParams
    ) -> None:
        self.http = http
        self.connect_base = connect_base
        self.auth_token = auth_token
        self.call = call

    async def request(
        self,
        url: str,
        *,
        status: str = "in-progress",
        extra: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> str:
        """Request the public `url` (signed as such) and return the body."""
        form = self.call.form(status) | dict(extra or {})
        target = rebase(url, self.connect_base)
        try:
            if method == "GET":
                # Twilio signs a GET's URL with the params in its query string.
                query = httpx.QueryParams(form)
                signed = f"{url}{'&' if '?' in url else '?'}{query}"
                signature = sign(self.auth_token, signed, {})
                response = await self.http.get(
                    target, params=query, headers={SIGNATURE_HEADER: signature}
                )
            else:
                response = await self.http.post(
                    target, data=form, headers={SIGNATURE_HEADER: sign(self.auth_token, url, form)}
                )
        except httpx.HTTPError as error:
            raise WebhookError(f"{urlsplit(url).path}: {error!r}") from None
        if not 200 <= response.status_code < 300:  # Twilio takes any 2xx (204 for callbacks)
            raise WebhookError(f"{urlsplit(url).path} answered HTTP {response.status_code}")
        return response.text
