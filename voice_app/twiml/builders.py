"""Every piece of TwiML the edge returns, built by pure functions (no I/O, no globals).

Webhook handlers gather the facts (settings, Redis state) and pass them in; what to say and
which verbs follow is decided here, so it can be read and tested on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from twilio.twiml.voice_response import Gather, VoiceResponse

MAX_RECONNECTS = 2
MAX_ACCOUNT_PROMPTS = 3
LANGUAGE = "en-US"
# Twilio's speech model for short strings of numbers; hints nudge it towards digit words.
_SPEECH = {
    "speech_model": "numbers_and_commands",
    "hints": "zero, oh, one, two, three, four, five, six, seven, eight, nine, double, triple",
    "language": LANGUAGE,
}

ASK_ACCOUNT = "Welcome. Please enter or say your account number, then press the pound key."
ASK_ACCOUNT_AGAIN = "Sorry, I did not get that. Please enter or say your account number."
ASK_PIN = "Please enter or say your PIN, then press the pound key."
PIN_NOT_HEARD = "Sorry, I did not catch that. Please enter or say your PIN."
PIN_WRONG = "That did not match. Please try your PIN again."
GOODBYE_TOO_MANY = (
    "Sorry, we could not confirm your account. Please check your details and call again. Goodbye."
)
GOODBYE_LOCKED = (
    "For your security, sign-in is paused after too many attempts. "
    "Please try again in about {minutes} minutes. Goodbye."
)
GOODBYE_NO_INPUT = "We did not hear anything. Goodbye."
GOODBYE_UNKNOWN_CLIENT = "Sorry, we could not find your account. Please sign in again. Goodbye."
RECONNECT_APOLOGY = "Sorry, we lost the line for a moment. I'm still here."
GIVE_UP_APOLOGY = "Sorry, we are having trouble with the line. Please call again. Goodbye."
GOODBYE_BUSY = (
    "Sorry, all our lines are busy right now. Please call again in a few minutes. Goodbye."
)


@dataclass(frozen=True, slots=True)
class EdgeUrls:
    """Absolute public URLs: Twilio needs them absolute and signs exactly these."""

    base: str  # PUBLIC_BASE_URL, e.g. https://voice.example.com
    ws_base: str  # its wss:// form

    def http(self, path: str, **query: str | int) -> str:
        return f"{self.base}{path}" + (f"?{urlencode(query)}" if query else "")

    @property
    def twilio_stream(self) -> str:
        return f"{self.ws_base}/streams/twilio"

    @property
    def local_stream(self) -> str:
        return f"{self.ws_base}/streams/local"


def _pin_gather(vr: VoiceResponse, urls: EdgeUrls, prompt: str) -> Gather:
    gather = vr.gather(
        input="dtmf speech",
        action=urls.http("/twiml/pin"),
        method="POST",
        finish_on_key="#",
        timeout=8,
        speech_timeout="auto",
        action_on_empty_result=True,  # silence comes back to us, and counts as a try
        **_SPEECH,
    )
    gather.say(prompt, language=LANGUAGE)
    return gather


def ask_pin(urls: EdgeUrls, prompt: str = ASK_PIN) -> str:
    vr = VoiceResponse()
    _pin_gather(vr, urls, prompt)
    vr.say(GOODBYE_NO_INPUT, language=LANGUAGE)  # reached only if Twilio skips the action
    vr.hangup()
    return str(vr)


def ask_account(urls: EdgeUrls, attempt: int = 1) -> str:
    """Ask for the account number; the attempt rides in the (signed) action URL."""
    vr = VoiceResponse()
    gather = vr.gather(
        input="dtmf speech",
        action=urls.http("/twiml/account", attempt=attempt),
        method="POST",
        finish_on_key="#",
        timeout=8,
        speech_timeout="auto",
        action_on_empty_result=True,
        **_SPEECH,
    )
    gather.say(ASK_ACCOUNT if attempt == 1 else ASK_ACCOUNT_AGAIN, language=LANGUAGE)
    vr.say(GOODBYE_NO_INPUT, language=LANGUAGE)
    vr.hangup()
    return str(vr)


def goodbye(message: str) -> str:
    vr = VoiceResponse()
    vr.say(message, language=LANGUAGE)
    vr.hangup()
    return str(vr)


def locked_goodbye(retry_after_seconds: int) -> str:
    minutes = max(1, -(-retry_after_seconds // 60))
    return goodbye(GOODBYE_LOCKED.format(minutes=minutes))


def connect_stream(urls: EdgeUrls, session_token: str, *, say: str | None = None) -> str:
    """Hand the call to the Media Stream. No query string on the stream URL (Twilio strips
    it): the session token travels as a <Parameter> and arrives in `start.customParameters`."""
    vr = VoiceResponse()
    if say:
        vr.say(say, language=LANGUAGE)
    connect = vr.connect(action=urls.http("/twiml/stream-ended"), method="POST")
    stream = connect.stream(
        url=urls.twilio_stream,
        status_callback=urls.http("/twiml/stream-status"),
        status_callback_method="POST",
    )
    stream.parameter(name="session", value=session_token)
    return str(vr)


def empty() -> str:
    return str(VoiceResponse())


def hang_up() -> str:
    vr = VoiceResponse()
    vr.hangup()
    return str(vr)


# After the stream ends ------------------------------------------------------------------------

# A transfer is in hand unless the call engine says it is not: its own TwiML (the <Dial><Sip>)
# is what runs next, and we must not talk over it.
_NO_TRANSFER = frozenset({"", "none", "failed", "cancelled", "canceled", "returned"})


class AfterStream(enum.Enum):
    NOTHING = "nothing"  # a transfer TwiML was already issued
    HANG_UP = "hang_up"  # the assistant said goodbye
    RECONNECT = "reconnect"  # the stream dropped: apologise and open a new one
    GIVE_UP = "give_up"  # dropped too often, or the session is gone
    BUSY = "busy"  # the process had no room for the call's stream


def after_stream(
    call_state: Mapping[str, str], *, session_alive: bool, max_reconnects: int = MAX_RECONNECTS
) -> AfterStream:
    """What a call does when its <Connect><Stream> ends, from the call's Redis state."""
    if call_state.get("transfer", "").strip().lower() not in _NO_TRANSFER:
        return AfterStream.NOTHING
    if call_state.get("phase") == "goodbye":
        return AfterStream.HANG_UP
    if call_state.get("phase") == "busy":
        return AfterStream.BUSY
    if not session_alive or reconnect_count(call_state) >= max_reconnects:
        return AfterStream.GIVE_UP
    return AfterStream.RECONNECT


def reconnect_count(call_state: Mapping[str, str]) -> int:
    try:
        return max(0, int(call_state.get("reconnects", "0")))
    except ValueError:
        return 0


def after_stream_twiml(decision: AfterStream, urls: EdgeUrls, session_token: str) -> str:
    if decision is AfterStream.NOTHING:
        return empty()
    if decision is AfterStream.HANG_UP:
        return hang_up()
    if decision is AfterStream.GIVE_UP:
        return goodbye(GIVE_UP_APOLOGY)
    if decision is AfterStream.BUSY:
        return goodbye(GOODBYE_BUSY)
    return connect_stream(urls, session_token, say=RECONNECT_APOLOGY)
