"""Twilio bidirectional Media Streams messages: parse what Twilio sends, encode what we send.

Pure: text in, dataclasses out (and back). `parse` raises only `CodecError`; the caller logs the
message and drops the frame. `StreamValidator` then judges whether a well-formed message makes
sense at this point of the stream. The `encode_*` functions build Twilio's side of the
conversation for the caller simulator and tests; `parse_outbound` reads ours back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MAX_FRAME = 64 * 1024  # characters (text) or bytes; a 20 ms media frame is ~330
DTMF_DIGITS = frozenset("0123456789*#")
MULAW = "audio/x-mulaw"
_UINT = re.compile(r"[0-9]{1,15}")  # counters arrive as decimal strings


class CodecError(ValueError):
    """A frame that is not a well-formed Media Streams message."""


# --- Inbound: Twilio → us -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str = MULAW
    sample_rate: int = 8000
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str = "Call"
    version: str = "1.0.0"


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    media_format: MediaFormat = MediaFormat()
    tracks: tuple[str, ...] = ("inbound",)
    sequence: int = 1


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    payload: bytes  # raw μ-law, already base64-decoded
    timestamp_ms: int
    chunk: int
    sequence: int
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str
    sequence: int
    track: str = "inbound_track"


@dataclass(frozen=True, slots=True)
class Mark:
    stream_sid: str
    name: str
    sequence: int


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str
    call_sid: str
    sequence: int
    account_sid: str = ""


InboundMessage = Connected | Start | Media | Dtmf | Mark | Stop


# --- Outbound: us → Twilio (as read back by the simulator) -----------------------------------


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    stream_sid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    stream_sid: str


OutboundMessage = OutboundMedia | OutboundMark | Clear


# --- Field readers: each names the field in its error -----------------------------------------


def _load(frame: str | bytes) -> dict[str, Any]:
    # Bytes are read as UTF-8 text (some socket layers hand text frames over that way);
    # real binary frames, such as raw audio, fail to decode or to parse.
    if not isinstance(frame, str | bytes):
        raise CodecError(f"frame must be text, got {type(frame).__name__}")
    if len(frame) > MAX_FRAME:
        raise CodecError(f"frame too large: {len(frame)} > {MAX_FRAME}")
    if isinstance(frame, bytes):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("binary frame: Media Streams messages are JSON text") from None
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise CodecError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CodecError(f"message must be a JSON object, got {type(obj).__name__}")
    return obj


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise CodecError(f"'{key}' must be an object")
    return value


def _str(parent: dict[str, Any], key: str, *, default: str | None = None) -> str:
    value = parent.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise CodecError(f"'{key}' must be a non-empty string")
    return value


def _uint(parent: dict[str, Any], key: str) -> int:
    value = parent.get(key)
    if isinstance(value, str) and _UINT.fullmatch(value):
        return int(value)
    # Twilio sends strings; tolerate plain JSON integers from other senders (not bools).
    if type(value) is int and 0 <= value < 10**15:
        return value
    raise CodecError(f"'{key}' must be a non-negative integer (as a decimal string)")


def _payload(media: dict[str, Any]) -> bytes:
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise CodecError("'media.payload' must be a base64 string")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise CodecError("'media.payload' is not valid base64") from None


def _sid(msg: dict[str, Any]) -> str:
    return _str(msg, "streamSid")


def _parse_connected(msg: dict[str, Any]) -> Connected:
    return Connected(_str(msg, "protocol", default="Call"), _str(msg, "version", default=""))


def _parse_start(msg: dict[str, Any]) -> Start:
    sid, body = _sid(msg), _obj(msg, "start")
    if body.get("streamSid", sid) != sid:
        raise CodecError("'start.streamSid' differs from 'streamSid'")
    params = body.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise CodecError("'customParameters' must map strings to strings")
    tracks = body.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise CodecError("'tracks' must be a list of strings")
    fmt = _obj(body, "mediaFormat")
    rate, channels = fmt.get("sampleRate"), fmt.get("channels")
    if type(rate) is not int or type(channels) is not int:
        raise CodecError("'mediaFormat.sampleRate' and 'channels' must be integers")
    return Start(
        stream_sid=sid,
        call_sid=_str(body, "callSid"),
        account_sid=_str(body, "accountSid"),
        custom_parameters=dict(params),
        media_format=MediaFormat(_str(fmt, "encoding"), rate, channels),
        tracks=tuple(tracks),
        sequence=_uint(msg, "sequenceNumber"),
    )


def _parse_media(msg: dict[str, Any]) -> Media:
    body = _obj(msg, "media")
    return Media(
        stream_sid=_sid(msg),
        payload=_payload(body),
        timestamp_ms=_uint(body, "timestamp"),
        chunk=_uint(body, "chunk"),
        sequence=_uint(msg, "sequenceNumber"),
        track=_str(body, "track", default="inbound"),
    )


def _parse_dtmf(msg: dict[str, Any]) -> Dtmf:
    body = _obj(msg, "dtmf")
    digit = body.get("digit")
    if not isinstance(digit, str) or digit not in DTMF_DIGITS:
        raise CodecError(f"'dtmf.digit' must be one of 0-9 * #, got {digit!r:.20}")
    return Dtmf(
        stream_sid=_sid(msg),
        digit=digit,
        sequence=_uint(msg, "sequenceNumber"),
        track=_str(body, "track", default="inbound_track"),
    )


def _parse_mark(msg: dict[str, Any]) -> Mark:
    name = _str(_obj(msg, "mark"), "name")
    return Mark(stream_sid=_sid(msg), name=name, sequence=_uint(msg, "sequenceNumber"))


def _parse_stop(msg: dict[str, Any]) -> Stop:
    body = _obj(msg, "stop")
    return Stop(
        stream_sid=_sid(msg),
        call_sid=_str(body, "callSid"),
        sequence=_uint(msg, "sequenceNumber"),
        account_sid=_str(body, "accountSid", default=""),
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], InboundMessage]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}


def _event(msg: dict[str, Any]) -> str:
    event = msg.get("event")
    if not isinstance(event, str):
        raise CodecError("'event' must be a string")
    return event


def parse(frame: str | bytes) -> InboundMessage:
    """Parse one frame from Twilio. Raises `CodecError` (and nothing else) if it is malformed."""
    msg = _load(frame)
    event = _event(msg)
    parser = _PARSERS.get(event)
    if parser is None:
        raise CodecError(f"unknown event {event!r:.40}")
    return parser(msg)


# --- Encoding what we send: called 50×/s per call, so assemble the JSON by hand ------------------


@lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    return json.dumps(text)


def media_message(stream_sid: str, mulaw: bytes) -> str:
    """Audio for the caller: raw μ-law 8 kHz, no header."""
    payload = base64.b64encode(mulaw).decode("ascii")  # base64 needs no JSON escaping
    head = '{"event":"media","streamSid":' + _quoted(stream_sid)
    return head + ',"media":{"payload":"' + payload + '"}}'


def mark_message(stream_sid: str, name: str) -> str:
    """Ask Twilio to echo `name` once the audio sent before it has played."""
    sid = _quoted(stream_sid)
    return '{"event":"mark","streamSid":' + sid + ',"mark":{"name":' + json.dumps(name) + "}}"


def clear_message(stream_sid: str) -> str:
    """Drop all queued audio now; Twilio echoes every pending mark."""
    return '{"event":"clear","streamSid":' + _quoted(stream_sid) + "}"


def parse_outbound(frame: str | bytes) -> OutboundMessage:
    """Read one of our own messages back, as Twilio would (for the simulator)."""
    msg = _load(frame)
    event, sid = _event(msg), _sid(msg)
    if any(key in msg for key in ("sequenceNumber", "track", "chunk")):
        raise CodecError("outbound messages must not carry sequenceNumber, track or chunk")
    if event == "media":
        body = _obj(msg, "media")
        if any(key in body for key in ("track", "chunk", "timestamp")):
            raise CodecError("outbound media must carry only a payload")
        return OutboundMedia(sid, _payload(body))
    if event == "mark":
        return OutboundMark(sid, _str(_obj(msg, "mark"), "name"))
    if event == "clear":
        return Clear(sid)
    raise CodecError(f"unknown outbound event {event!r:.40}")


# --- Encoding Twilio's side (caller simulator, tests) -------------------------------------------


def _dump(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def encode_connected(protocol: str = "Call", version: str = "1.0.0") -> str:
    return _dump({"event": "connected", "protocol": protocol, "version": version})


def encode_start(
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    custom_parameters: dict[str, str] | None = None,
    *,
    sequence: int = 1,
    media_format: MediaFormat = MediaFormat(),
    tracks: tuple[str, ...] = ("inbound",),
) -> str:
    return _dump(
        {
            "event": "start",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "accountSid": account_sid,
                "callSid": call_sid,
                "tracks": list(tracks),
                "customParameters": dict(custom_parameters or {}),
                "mediaFormat": {
                    "encoding": media_format.encoding,
                    "sampleRate": media_format.sample_rate,
                    "channels": media_format.channels,
                },
            },
        }
    )


def encode_media(
    stream_sid: str,
    payload: bytes,
    *,
    sequence: int,
    chunk: int,
    timestamp_ms: int,
    track: str = "inbound",
) -> str:
    return _dump(
        {
            "event": "media",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        }
    )


def encode_dtmf(stream_sid: str, digit: str, *, sequence: int, track: str = "inbound_track") -> str:
    return _dump(
        {
            "event": "dtmf",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "dtmf": {"track": track, "digit": digit},
        }
    )


def encode_mark(stream_sid: str, name: str, *, sequence: int) -> str:
    return _dump(
        {
            "event": "mark",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def encode_stop(stream_sid: str, call_sid: str, account_sid: str = "", *, sequence: int) -> str:
    return _dump(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


def encode(message: InboundMessage) -> str:
    """The frame Twilio would send for `message`; `parse(encode(m)) == m`."""
    match message:
        case Connected(protocol, version):
            return encode_connected(protocol, version)
        case Start():
            return encode_start(
                message.stream_sid,
                message.call_sid,
                message.account_sid,
                message.custom_parameters,
                sequence=message.sequence,
                media_format=message.media_format,
                tracks=message.tracks,
            )
        case Media(sid, payload, timestamp_ms, chunk, sequence, track):
            return encode_media(
                sid, payload, sequence=sequence, chunk=chunk, timestamp_ms=timestamp_ms, track=track
            )
        case Dtmf(sid, digit, sequence, track):
            return encode_dtmf(sid, digit, sequence=sequence, track=track)
        case Mark(sid, name, sequence):
            return encode_mark(sid, name, sequence=sequence)
        case Stop(sid, call_sid, sequence, account_sid):
            return encode_stop(sid, call_sid, account_sid, sequence=sequence)
    raise TypeError(f"not an inbound message: {message!r}")


class TwilioSide:
    """Plays Twilio's part of one stream for the simulator: numbers messages the way Twilio does.

    `sequenceNumber` counts every message after `connected` from 1; media `chunk` counts from 1;
    `timestamp` is the stream time in ms, advanced by the audio sent.
    """

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str) -> None:
        self.stream_sid, self.call_sid, self.account_sid = stream_sid, call_sid, account_sid
        self._sequence = 0
        self._chunk = 0
        self._elapsed_ms = 0.0

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def connected(self) -> str:
        return encode_connected()

    def start(self, custom_parameters: dict[str, str] | None = None) -> str:
        return encode_start(
            self.stream_sid,
            self.call_sid,
            self.account_sid,
            custom_parameters,
            sequence=self._next(),
        )

    def media(self, mulaw: bytes) -> str:
        self._chunk += 1
        frame = encode_media(
            self.stream_sid,
            mulaw,
            sequence=self._next(),
            chunk=self._chunk,
            timestamp_ms=int(self._elapsed_ms),
        )
        self._elapsed_ms += len(mulaw) / 8  # μ-law 8 kHz: 8 bytes per ms
        return frame

    def dtmf(self, digit: str) -> str:
        return encode_dtmf(self.stream_sid, digit, sequence=self._next())

    def mark(self, name: str) -> str:
        return encode_mark(self.stream_sid, name, sequence=self._next())

    def stop(self) -> str:
        return encode_stop(self.stream_sid, self.call_sid, self.account_sid, sequence=self._next())


# --- Sequencing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


ACCEPT = Verdict(True)


class StreamValidator:
    """Judges whether each parsed message makes sense where it arrives in the stream.

    Rejected messages leave the state untouched, so one bad frame doesn't poison the rest.
    Only media is checked for ordering: Twilio numbers every message, but it documents no
    promise about how marks and dtmf interleave with media, and dropping a real mark echo
    would break barge-in bookkeeping.
    """

    def __init__(self) -> None:
        self.start: Start | None = None
        self.stopped = False
        self._last_media: Media | None = None

    @property
    def stream_sid(self) -> str | None:
        return self.start.stream_sid if self.start else None

    def check(self, msg: InboundMessage) -> Verdict:
        if self.stopped:
            return Verdict(False, f"{_name(msg)} after stop")
        if isinstance(msg, Connected):
            return ACCEPT if self.start is None else Verdict(False, "connected after start")
        if isinstance(msg, Start):
            return self._check_start(msg)
        if self.start is None:
            return Verdict(False, f"{_name(msg)} before start")
        if msg.stream_sid != self.start.stream_sid:
            return Verdict(False, f"streamSid {msg.stream_sid!r:.40} does not match this stream")
        if isinstance(msg, Media):
            return self._check_media(msg)
        if isinstance(msg, Stop):
            self.stopped = True
        return ACCEPT

    def _check_start(self, msg: Start) -> Verdict:
        if self.start is not None:
            return Verdict(False, "second start")
        fmt = msg.media_format
        if fmt != MediaFormat(MULAW, 8000, 1):
            return Verdict(
                False,
                f"unsupported media format {fmt.encoding}/{fmt.sample_rate}/{fmt.channels}",
            )
        self.start = msg
        return ACCEPT

    def _check_media(self, msg: Media) -> Verdict:
        last = self._last_media
        if last is not None:
            if msg.sequence <= last.sequence or msg.chunk <= last.chunk:
                return Verdict(False, f"media out of order (sequence {msg.sequence})")
            if msg.timestamp_ms < last.timestamp_ms:
                return Verdict(False, f"media timestamp went backwards ({msg.timestamp_ms} ms)")
        self._last_media = msg
        return ACCEPT


def _name(msg: InboundMessage) -> str:
    return type(msg).__name__.lower()
