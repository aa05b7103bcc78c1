"""The Media Streams codec: Twilio's frames in, ours out, and the stream's sequencing rules."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice_app.streams.codec import (
    ACCEPT,
    MAX_FRAME,
    Clear,
    CodecError,
    Connected,
    Dtmf,
    InboundMessage,
    Mark,
    Media,
    MediaFormat,
    OutboundMark,
    OutboundMedia,
    Start,
    Stop,
    StreamValidator,
    TwilioSide,
    clear_message,
    encode,
    encode_dtmf,
    mark_message,
    media_message,
    parse,
    parse_outbound,
)

SID = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"
ACCOUNT = "AC00000000000000000000000000000001"

# Frames exactly as Twilio documents them (PROTOCOLS.md A1).
TWILIO_FRAMES = {
    "connected": '{"event":"connected","protocol":"Call","version":"1.0.0"}',
    "start": json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SID,
            "start": {
                "streamSid": SID,
                "accountSid": ACCOUNT,
                "callSid": CALL,
                "tracks": ["inbound"],
                "customParameters": {"tenant": "acme", "session": "tok"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    ),
    "media": json.dumps(
        {
            "event": "media",
            "sequenceNumber": "4",
            "streamSid": SID,
            "media": {
                "track": "inbound",
                "chunk": "2",
                "timestamp": "5",
                "payload": base64.b64encode(b"\xff\x7f\x00" * 10).decode(),
            },
        }
    ),
    "dtmf": json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": "5",
            "streamSid": SID,
            "dtmf": {"track": "inbound_track", "digit": "1"},
        }
    ),
    "mark": json.dumps(
        {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "utt-7"}}
    ),
    "stop": json.dumps(
        {
            "event": "stop",
            "sequenceNumber": "5",
            "streamSid": SID,
            "stop": {"accountSid": ACCOUNT, "callSid": CALL},
        }
    ),
}


def frame(event: str, **changes: Any) -> dict[str, Any]:
    """A documented frame as a dict, to be broken in one place by a test."""
    return {**json.loads(TWILIO_FRAMES[event]), **changes}


# --- parsing the documented frames ---


def test_parses_connected() -> None:
    assert parse(TWILIO_FRAMES["connected"]) == Connected("Call", "1.0.0")


def test_parses_start() -> None:
    assert parse(TWILIO_FRAMES["start"]) == Start(
        stream_sid=SID,
        call_sid=CALL,
        account_sid=ACCOUNT,
        custom_parameters={"tenant": "acme", "session": "tok"},
        media_format=MediaFormat("audio/x-mulaw", 8000, 1),
        tracks=("inbound",),
        sequence=1,
    )


def test_parses_media_and_decodes_payload() -> None:
    msg = parse(TWILIO_FRAMES["media"])
    assert msg == Media(
        stream_sid=SID,
        payload=b"\xff\x7f\x00" * 10,
        timestamp_ms=5,
        chunk=2,
        sequence=4,
        track="inbound",
    )


def test_parses_dtmf_mark_stop() -> None:
    assert parse(TWILIO_FRAMES["dtmf"]) == Dtmf(SID, "1", 5, "inbound_track")
    assert parse(TWILIO_FRAMES["mark"]) == Mark(SID, "utt-7", 4)
    assert parse(TWILIO_FRAMES["stop"]) == Stop(SID, CALL, 5, ACCOUNT)


def test_accepts_utf8_bytes_of_a_text_frame() -> None:
    assert parse(TWILIO_FRAMES["mark"].encode()) == Mark(SID, "utt-7", 4)


def test_start_without_custom_parameters_or_tracks_gets_defaults() -> None:
    body = frame("start")["start"]
    del body["customParameters"], body["tracks"]
    msg = parse(json.dumps(frame("start", start=body)))
    assert isinstance(msg, Start)
    assert msg.custom_parameters == {}
    assert msg.tracks == ("inbound",)


def test_counters_may_be_plain_integers() -> None:
    msg = parse(json.dumps(frame("mark", sequenceNumber=9)))
    assert msg == Mark(SID, "utt-7", 9)


def test_unknown_fields_are_ignored() -> None:
    msg = parse(json.dumps(frame("mark", extra={"x": 1})))
    assert msg == Mark(SID, "utt-7", 4)


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_every_dtmf_key(digit: str) -> None:
    msg = parse(encode_dtmf(SID, digit, sequence=3))
    assert isinstance(msg, Dtmf) and msg.digit == digit


# --- rejecting malformed frames ---


def broken(event: str, path: tuple[str, ...], value: Any) -> str:
    """The documented frame with the field at `path` set to `value` (or removed, if ...)."""
    msg = json.loads(TWILIO_FRAMES[event])
    parent = msg
    for key in path[:-1]:
        parent = parent[key]
    if value is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return json.dumps(msg)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"\xff\x00\x7f\x80" * 40, "binary frame"),
        ("not json", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('"media"', "JSON object"),
        ("{}", "'event'"),
        ('{"event": 5}', "'event'"),
        ('{"event": "clear", "streamSid": "MZ1"}', "unknown event"),
        ('{"event": "Media"}', "unknown event"),
        ("[" * 100_000, "too large"),
        ("[" * 60_000, "not JSON"),  # deep nesting: a RecursionError inside json
        (" " * (MAX_FRAME + 1), "too large"),
        (broken("media", ("media", "payload"), "not base64!"), "base64"),
        (broken("media", ("media", "payload"), "QUJD"[:3]), "base64"),  # bad padding
        (broken("media", ("media", "payload"), 123), "payload"),
        (broken("media", ("media", "payload"), ...), "payload"),
        (broken("media", ("media", "timestamp"), "-5"), "timestamp"),
        (broken("media", ("media", "timestamp"), "5.0"), "timestamp"),
        (broken("media", ("media", "timestamp"), True), "timestamp"),
        (broken("media", ("media", "timestamp"), 5.0), "timestamp"),
        (broken("media", ("media", "chunk"), ...), "chunk"),
        (broken("media", ("media", "chunk"), "9" * 30), "chunk"),
        (broken("media", ("media", "track"), 1), "track"),
        (broken("media", ("sequenceNumber",), ...), "sequenceNumber"),
        (broken("media", ("streamSid",), ...), "streamSid"),
        (broken("media", ("streamSid",), ""), "streamSid"),
        (broken("media", ("streamSid",), ["MZ"]), "streamSid"),
        (broken("media", ("media",), "x"), "'media'"),
        (broken("start", ("start", "callSid"), ...), "callSid"),
        (broken("start", ("start", "accountSid"), None), "accountSid"),
        (broken("start", ("start", "streamSid"), "MZother"), "differs"),
        (broken("start", ("start", "customParameters"), {"a": 1}), "customParameters"),
        (broken("start", ("start", "customParameters"), ["a"]), "customParameters"),
        (broken("start", ("start", "tracks"), "inbound"), "tracks"),
        (broken("start", ("start", "mediaFormat"), ...), "mediaFormat"),
        (broken("start", ("start", "mediaFormat", "sampleRate"), "8000"), "sampleRate"),
        (broken("start", ("start", "mediaFormat", "channels"), True), "channels"),
        (broken("start", ("start", "mediaFormat", "encoding"), 7), "encoding"),
        (broken("start", ("start",), None), "'start'"),
        (broken("dtmf", ("dtmf", "digit"), "A"), "digit"),
        (broken("dtmf", ("dtmf", "digit"), "12"), "digit"),
        (broken("dtmf", ("dtmf", "digit"), ""), "digit"),
        (broken("dtmf", ("dtmf", "digit"), 1), "digit"),
        (broken("dtmf", ("dtmf", "digit"), ...), "digit"),
        (broken("mark", ("mark", "name"), ""), "name"),
        (broken("mark", ("mark", "name"), 7), "name"),
        (broken("mark", ("mark",), ...), "'mark'"),
        (broken("stop", ("stop", "callSid"), ...), "callSid"),
        (broken("stop", ("stop",), []), "'stop'"),
    ],
)
def test_rejects_with_a_clear_message(bad: str | bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        parse(bad)


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_rejects_non_text_objects() -> None:
    with pytest.raises(CodecError, match="text"):
        parse(memoryview(b"{}"))  # type: ignore[arg-type]


# --- outbound encoders ---


def test_media_message_is_exactly_what_twilio_expects() -> None:
    audio = bytes(range(256)) * 2
    msg = json.loads(media_message(SID, audio))
    assert msg == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(audio).decode()},
    }


def test_mark_and_clear_messages() -> None:
    assert json.loads(mark_message(SID, "r3-2")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "r3-2"},
    }
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}


def test_outbound_messages_escape_awkward_text() -> None:
    sid, name = 'MZ"\\\n', 'mark "quoted" \\ é \u2028'
    assert json.loads(mark_message(sid, name)) == {
        "event": "mark",
        "streamSid": sid,
        "mark": {"name": name},
    }
    assert json.loads(clear_message(sid))["streamSid"] == sid
    assert json.loads(media_message(sid, b"\x00"))["streamSid"] == sid


def test_outbound_messages_read_back() -> None:
    assert parse_outbound(media_message(SID, b"\x01\x02")) == OutboundMedia(SID, b"\x01\x02")
    assert parse_outbound(mark_message(SID, "m")) == OutboundMark(SID, "m")
    assert parse_outbound(clear_message(SID)) == Clear(SID)


@pytest.mark.parametrize(
    "bad",
    [
        '{"event":"media","streamSid":"MZ","sequenceNumber":"1","media":{"payload":""}}',
        '{"event":"media","streamSid":"MZ","media":{"payload":"","track":"outbound"}}',
        '{"event":"media","streamSid":"MZ","media":{"payload":"%%%"}}',
        '{"event":"stop","streamSid":"MZ"}',
        '{"event":"clear"}',
    ],
)
def test_parse_outbound_holds_us_to_the_protocol(bad: str) -> None:
    with pytest.raises(CodecError):
        parse_outbound(bad)


# --- Twilio's side, for the simulator ---


def test_twilio_side_numbers_messages_like_twilio() -> None:
    side = TwilioSide(SID, CALL, ACCOUNT)
    assert parse(side.connected()) == Connected()
    start = parse(side.start({"tenant": "acme"}))
    first, second = parse(side.media(b"\xff" * 160)), parse(side.media(b"\xff" * 80))
    mark, dtmf, stop = parse(side.mark("m1")), parse(side.dtmf("#")), parse(side.stop())
    assert isinstance(start, Start) and start.sequence == 1
    assert start.custom_parameters == {"tenant": "acme"}
    assert first == Media(SID, b"\xff" * 160, timestamp_ms=0, chunk=1, sequence=2)
    assert second == Media(SID, b"\xff" * 80, timestamp_ms=20, chunk=2, sequence=3)
    assert mark == Mark(SID, "m1", 4)
    assert dtmf == Dtmf(SID, "#", 5)
    assert stop == Stop(SID, CALL, 6, ACCOUNT)


def test_a_simulated_stream_passes_the_validator() -> None:
    side, validator = TwilioSide(SID, CALL, ACCOUNT), StreamValidator()
    frames = [side.connected(), side.start()]
    frames += [side.media(b"\xff" * 160) for _ in range(5)]
    frames += [side.mark("a"), side.dtmf("5"), side.media(b"\x00" * 160), side.stop()]
    assert all(validator.check(parse(f)) == ACCEPT for f in frames)
    assert validator.stopped


# --- property tests ---

sids = st.text(min_size=1, max_size=40)
counters = st.integers(min_value=0, max_value=10**12)
texts = st.text(max_size=30)

inbound_messages: st.SearchStrategy[InboundMessage] = st.one_of(
    st.builds(Connected, texts, texts),
    st.builds(
        Start,
        stream_sid=sids,
        call_sid=sids,
        account_sid=sids,
        custom_parameters=st.dictionaries(texts, texts, max_size=5),
        media_format=st.builds(MediaFormat, sids, st.integers(), st.integers()),
        tracks=st.lists(texts, max_size=3).map(tuple),
        sequence=counters,
    ),
    st.builds(Media, sids, st.binary(max_size=800), counters, counters, counters, texts),
    st.builds(Dtmf, sids, st.sampled_from("0123456789*#"), counters, texts),
    st.builds(Mark, sids, sids, counters),
    st.builds(Stop, sids, sids, counters, texts),
)


@given(inbound_messages)
def test_encode_then_parse_round_trips(msg: InboundMessage) -> None:
    assert parse(encode(msg)) == msg
    assert parse(encode(msg).encode()) == msg


@given(sids, st.binary(max_size=2000), sids)
def test_outbound_round_trips(sid: str, audio: bytes, name: str) -> None:
    assert parse_outbound(media_message(sid, audio)) == OutboundMedia(sid, audio)
    assert parse_outbound(mark_message(sid, name)) == OutboundMark(sid, name)
    assert parse_outbound(clear_message(sid)) == Clear(sid)


def only_codec_errors(data: str | bytes) -> None:
    try:
        result = parse(data)
    except CodecError:
        return
    assert isinstance(result, Connected | Start | Media | Dtmf | Mark | Stop)


@given(st.text(max_size=300))
def test_random_text_raises_nothing_but_codec_error(data: str) -> None:
    only_codec_errors(data)


@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_codec_error(data: bytes) -> None:
    only_codec_errors(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=10)
    | st.sampled_from(["", "1", "-1", "07", "QUJD", "=", "1" * 20]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "event", "streamSid", "sequenceNumber", "start", "media", "dtmf", "mark", "stop",
        "payload", "timestamp", "chunk", "track", "digit", "name", "callSid", "accountSid",
        "customParameters", "mediaFormat", "sampleRate", "channels", "encoding", "tracks",
    ]
)  # fmt: skip


def mutate(obj: Any, path: list[str], value: Any) -> Any:
    """Set `value` at the first existing dict along `path`, or replace a leaf."""
    if not isinstance(obj, dict) or not path:
        return value
    key, rest = path[0], path[1:]
    if key in obj and isinstance(obj[key], dict) and rest:
        return {**obj, key: mutate(obj[key], rest, value)}
    return {**obj, key: value}


@settings(max_examples=400)
@given(
    st.sampled_from(sorted(TWILIO_FRAMES)),
    st.lists(field_names, min_size=1, max_size=3),
    json_values,
    st.booleans(),
)
def test_mutated_twilio_frames_raise_nothing_but_codec_error(
    event: str, path: list[str], value: Any, delete: bool
) -> None:
    msg = json.loads(TWILIO_FRAMES[event])
    if delete and path[0] in msg:
        del msg[path[0]]
    else:
        msg = mutate(msg, path, value)
    only_codec_errors(json.dumps(msg))


@given(st.dictionaries(field_names, json_values, max_size=6))
def test_random_objects_raise_nothing_but_codec_error(obj: dict[str, Any]) -> None:
    only_codec_errors(json.dumps(obj))


@given(st.sampled_from(sorted(TWILIO_FRAMES)), st.integers(0, 400), st.binary(max_size=4))
def test_corrupted_frames_raise_nothing_but_codec_error(event: str, at: int, junk: bytes) -> None:
    data = TWILIO_FRAMES[event].encode()
    only_codec_errors(data[:at] + junk + data[at + len(junk) :])


# --- the stream validator ---


def start_msg(sid: str = SID, **fmt: Any) -> Start:
    return Start(sid, CALL, ACCOUNT, media_format=MediaFormat(**fmt) if fmt else MediaFormat())


def media_msg(sequence: int, chunk: int | None = None, ts: int | None = None) -> Media:
    chunk = sequence if chunk is None else chunk
    return Media(SID, b"\xff" * 160, timestamp_ms=20 * chunk if ts is None else ts,
                 chunk=chunk, sequence=sequence)  # fmt: skip


def started() -> StreamValidator:
    validator = StreamValidator()
    assert validator.check(Connected()) == ACCEPT
    assert validator.check(start_msg()) == ACCEPT
    return validator


def test_validator_accepts_a_normal_stream() -> None:
    validator = started()
    assert validator.stream_sid == SID
    for msg in (media_msg(2), Dtmf(SID, "1", 3), media_msg(4), Mark(SID, "m", 5), media_msg(6)):
        assert validator.check(msg) == ACCEPT
    assert validator.check(Stop(SID, CALL, 7)) == ACCEPT
    assert validator.stopped


@pytest.mark.parametrize(
    "msg", [media_msg(2), Dtmf(SID, "1", 2), Mark(SID, "m", 2), Stop(SID, CALL, 2)]
)
def test_validator_rejects_anything_before_start(msg: InboundMessage) -> None:
    verdict = StreamValidator().check(msg)
    assert not verdict.ok and "before start" in verdict.reason


def test_validator_rejects_a_second_start_and_late_connected() -> None:
    validator = started()
    verdict = validator.check(start_msg("MZother"))
    assert not verdict.ok and "second start" in verdict.reason
    assert validator.stream_sid == SID
    assert not validator.check(Connected()).ok


@pytest.mark.parametrize(
    "msg",
    [
        media_msg(9),
        Dtmf(SID, "1", 9),
        Mark(SID, "m", 9),
        Stop(SID, CALL, 9),
        Connected(),
        start_msg(),
    ],
)
def test_validator_rejects_everything_after_stop(msg: InboundMessage) -> None:
    validator = started()
    assert validator.check(Stop(SID, CALL, 2)) == ACCEPT
    verdict = validator.check(msg)
    assert not verdict.ok and "after stop" in verdict.reason


@pytest.mark.parametrize(
    "msg",
    [
        Media("MZother", b"", 0, 2, 2),
        Dtmf("MZother", "1", 2),
        Mark("MZother", "m", 2),
        Stop("MZother", CALL, 2),
    ],
)
def test_validator_rejects_another_streams_messages(msg: InboundMessage) -> None:
    validator = started()
    verdict = validator.check(msg)
    assert not verdict.ok and "does not match" in verdict.reason
    assert not validator.stopped


@pytest.mark.parametrize(
    "fmt",
    [
        {"encoding": "audio/l16"},
        {"sample_rate": 16000},
        {"channels": 2},
    ],
)
def test_validator_rejects_unsupported_audio(fmt: dict[str, Any]) -> None:
    validator = StreamValidator()
    verdict = validator.check(start_msg(**fmt))
    assert not verdict.ok and "unsupported media format" in verdict.reason
    assert validator.start is None  # a rejected start doesn't start the stream


def test_validator_rejects_media_out_of_order() -> None:
    validator = started()
    assert validator.check(media_msg(5)) == ACCEPT
    assert not validator.check(media_msg(5)).ok  # duplicate
    assert not validator.check(media_msg(4)).ok  # late
    assert not validator.check(media_msg(6, chunk=5)).ok  # chunk repeated
    assert not validator.check(media_msg(6, chunk=6, ts=10)).ok  # time went backwards
    assert validator.check(media_msg(7)) == ACCEPT  # rejections left the state alone


def test_validator_doesnt_order_marks_against_media() -> None:
    # Marks and dtmf interleave with media by Twilio's own rules; a real echo must never drop.
    validator = started()
    assert validator.check(media_msg(10)) == ACCEPT
    assert validator.check(Mark(SID, "m", 3)) == ACCEPT
    assert validator.check(Dtmf(SID, "1", 3)) == ACCEPT
