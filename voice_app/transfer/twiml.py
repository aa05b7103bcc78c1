"""The TwiML of a transfer, built by pure functions: values in, XML out.

    <Dial answerOnBridge="true" timeout="20" action="{base}/twiml/transfer-done" method="POST">
      <Sip username=… password=…>sip:2001@pbx;transport=tls?X-Call-Context=…&amp;X-Caller-Id=…</Sip>
    </Dial>

Twilio's rules for the headers part of a <Sip> URI (PROTOCOLS.md A5, G8): names start with X- and
never with X-Twilio, values are URL-encoded, and the whole part stays under 1024 characters. A
breach raises `SipHeaderError` here rather than error 21227/21229/32113 on a live call. XML
escaping is left to twilio's builder.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from urllib.parse import quote

from twilio.twiml.voice_response import VoiceResponse

from voice_app.twiml.builders import LANGUAGE, EdgeUrls, connect_stream

MAX_HEADERS_CHARS = 1023  # "under 1024"
DIAL_TIMEOUT_SECONDS = 20
DONE_PATH = "/twiml/transfer-done"
_HEADER_NAME = re.compile(r"X-[A-Za-z0-9][A-Za-z0-9-]*")

AGENT_GOODBYE = "Thanks for calling. Goodbye."
AGENT_MISSED = (
    "The agent couldn't take your call just now, so I've asked a colleague to call you back."
)
AGENT_MISSED_NO_CALLBACK = "The agent couldn't take your call just now."


class SipHeaderError(ValueError):
    """A header Twilio would refuse (name, or length of the headers part)."""


def sip_headers(headers: Mapping[str, str]) -> str:
    """`X-A=v&X-B=w`, each value percent-encoded (so `+`, `&`, `=` and spaces survive)."""
    parts = []
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower().startswith("x-twilio"):
            raise SipHeaderError(f"{name!r}: custom SIP headers are X-… and never X-Twilio…")
        parts.append(f"{name}={quote(value, safe='')}")
    query = "&".join(parts)
    if len(query) > MAX_HEADERS_CHARS:
        raise SipHeaderError(f"SIP headers are {len(query)} characters; Twilio allows under 1024")
    return query


def sip_uri(extension: str, domain: str, headers: Mapping[str, str]) -> str:
    """sip:2001@pbx;transport=tls?X-…: TLS to the PBX, so the token is not sent in clear."""
    query = sip_headers(headers)
    return f"sip:{extension}@{domain};transport=tls" + (f"?{query}" if query else "")


def transfer_twiml(
    *,
    public_base_url: str,
    extension: str,
    domain: str,
    context_token: str,
    caller_id: str = "",
    username: str | None = None,
    password: str | None = None,
) -> str:
    """The TwiML that replaces the live stream: ring the agent, come back to `DONE_PATH`."""
    headers = {"X-Call-Context": context_token}
    if caller_id:
        headers["X-Caller-Id"] = caller_id
    vr = VoiceResponse()
    dial = vr.dial(
        answer_on_bridge=True,  # the caller hears ringing, not silence, until the agent answers
        timeout=DIAL_TIMEOUT_SECONDS,
        action=public_base_url.rstrip("/") + DONE_PATH,
        method="POST",
    )
    dial.sip(sip_uri(extension, domain, headers), username=username, password=password)
    return str(vr)


class DialOutcome(enum.Enum):
    CONNECTED = "connected"  # the agent answered; the call with them has ended
    MISSED = "missed"  # busy, no answer, failed or canceled: back to the assistant
    CALLER_GONE = "caller_gone"  # the caller hung up: nothing more to say to them


def dial_outcome(dial_call_status: str, call_status: str = "in-progress") -> DialOutcome:
    """What a `<Dial action>` request means, from DialCallStatus and the caller's CallStatus."""
    if call_status in {"completed", "canceled", "failed", "busy", "no-answer"}:
        return DialOutcome.CALLER_GONE
    if dial_call_status in {"completed", "answered"}:
        return DialOutcome.CONNECTED
    return DialOutcome.MISSED


def goodbye_twiml(line: str = AGENT_GOODBYE) -> str:
    vr = VoiceResponse()
    vr.say(line, language=LANGUAGE)
    vr.hangup()
    return str(vr)


def missed_line(callback: bool) -> str:
    """Promise a callback only when one was noted."""
    return AGENT_MISSED if callback else AGENT_MISSED_NO_CALLBACK


def back_to_assistant_twiml(urls: EdgeUrls, session_token: str, *, callback: bool) -> str:
    """The honest line, then a new stream with the same call session token."""
    return connect_stream(urls, session_token, say=missed_line(callback))
