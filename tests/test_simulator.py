"""The caller simulator (`voice-app call`) against a small fake app on 127.0.0.1.

The fake speaks the app's side of Twilio's protocols: it checks every signature with twilio's
RequestValidator, serves TwiML (PIN gather → Connect/Stream), and on the stream plays known
audio with marks and clears at known times. Both sides read time.monotonic() (asyncio's clock),
so the simulator's measurements can be checked against what the fake actually did.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
import wave
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request, websocket
from twilio.request_validator import RequestValidator

from voice_app.config import Settings
from voice_app.simulator import cli
from voice_app.simulator.call import CallConfig, run_call
from voice_app.simulator.caller import Caller, Step
from voice_app.simulator.media import Playback
from voice_app.simulator.twiml_flow import (
    Connect,
    Gather,
    Hangup,
    Say,
    gather_kind,
    parse_twiml,
    rebase,
)
from voice_app.simulator.voice import synthesize
from voice_app.simulator.wire import SILENCE_B64, Wire
from voice_app.streams import codec
from voice_app.streams.audio import is_speech_like, pcm16_to_ulaw

TOKEN = "test-token-for-the-simulator"
PUBLIC = "https://voice.example.test"  # what the fake believes it is at; we connect elsewhere
SID = "MZ" + "1" * 32


def tone(seconds: float, freq: float = 440.0) -> bytes:
    n = int(seconds * 8000)
    pcm = b"".join(
        int(8000 * math.sin(2 * math.pi * freq * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )
    return pcm16_to_ulaw(pcm)


# --- Pure parts ------------------------------------------------------------------------------


def test_fast_media_frame_is_identical_to_twilio_side() -> None:
    fast, reference = Wire(SID, "CA1", "AC1"), codec.TwilioSide(SID, "CA1", "AC1")
    payload = b"\xff" * 160
    for _ in range(3):
        assert fast.media_b64(SILENCE_B64) == reference.media(payload)
    assert fast.mark("m1") == reference.mark("m1")  # numbering stays in step


def test_playback_marks_wait_for_the_audio_before_them() -> None:
    p = Playback(100.0, record=True)
    assert p.push_mark("idle", 100.0) == ["idle"]  # nothing queued: echoed at once
    assert p.push_audio(b"\x00" * 800, 100.1) == []  # 100 ms, starts playing at arrival
    assert p.push_mark("a", 100.1) == []
    assert p.push_audio(b"\x00" * 800, 100.1) == []
    assert p.push_mark("b", 100.1) == []
    assert p.advance(100.199) == []
    assert p.advance(100.201) == ["a"]
    assert p.playing and p.started_at == pytest.approx(100.1, abs=1e-3)
    assert p.advance(100.31) == ["b"]
    assert not p.playing and p.stopped_at == pytest.approx(100.3, abs=1e-3)
    assert p.stop_reason == "drained"
    assert len(p.recording or b"") == int(0.31 * 8000)  # silence + audio + silence, real time


def test_playback_clear_drops_audio_and_releases_pending_marks() -> None:
    p = Playback(0.0, record=True)
    p.push_audio(b"\x00" * 8000, 0.0)  # one second
    p.push_mark("one", 0.0)
    p.push_audio(b"\x00" * 8000, 0.0)
    p.push_mark("two", 0.0)
    assert p.clear(0.25) == ["one", "two"]
    assert p.stopped_at == pytest.approx(0.25, abs=1e-3) and p.stop_reason == "cleared"
    assert p.queued_bytes == 0 and p.marks_echoed == 2
    p.advance(0.5)
    rec = p.recording or b""
    assert rec[:2000] == b"\x00" * 2000 and set(rec[2000:]) == {0xFF}


def test_twiml_parsing_and_url_rebasing() -> None:
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Gather action="/twiml/pin" input="dtmf speech"><Say>Please enter your PIN.</Say>'
        "</Gather><Say>Bye</Say><Hangup/>"
        '<Connect action="/after"><Stream url="wss://x.test/s"><Parameter name="session" '
        'value="tok"/></Stream></Connect></Response>'
    )
    verbs = parse_twiml(doc, "https://x.test/twiml/voice")
    gather = verbs[0]
    assert isinstance(gather, Gather) and gather.action == "https://x.test/twiml/pin"
    assert gather_kind(gather) == "pin"
    assert verbs[1:3] == [Say("Bye"), Hangup()]
    connect = verbs[3]
    assert isinstance(connect, Connect) and connect.stream is not None
    assert connect.stream.parameters == {"session": "tok"}
    assert connect.action == "https://x.test/after"
    assert rebase("wss://x.test/s", "http://127.0.0.1:9") == "ws://127.0.0.1:9/s"
    assert rebase("https://x.test/a?b=1", "http://127.0.0.1:9") == "http://127.0.0.1:9/a?b=1"


def test_caller_waits_for_the_reply_to_finish_then_presses_keys() -> None:
    playback, caller = Playback(0.0), Caller([Step("dtmf", "12")], quiet_s=0.3)
    caller.begin(0.0, playback)
    playback.push_audio(tone(0.5), 0.1)  # the greeting: 0.1–0.6 s
    sent: list[tuple[float, str]] = []
    for n in range(80):
        now = n * 0.02
        playback.advance(now)
        tick = caller.tick(now, playback)
        if tick.digit:
            sent.append((now, tick.digit))
        if tick.finished:
            break
    assert [d for _, d in sent] == ["1", "2"]
    assert sent[0][0] == pytest.approx(0.9, abs=0.021)  # 0.6 s end of greeting + 0.3 s quiet
    assert sent[1][0] - sent[0][0] == pytest.approx(0.2)
    greeting, keys = caller.turns
    assert greeting.latency_arrival_s == pytest.approx(0.1)
    assert keys.end == sent[1][0] and not keys.barge_in


def test_script_flags_keep_their_order() -> None:
    parser = cli.build_parser(Settings.from_env({}, dotenv=None))
    args = parser.parse_args(
        ["--say", "hi", "--barge-in-after", "800", "--say", "stop", "--dtmf", "1#"]
    )
    assert [(s.kind, s.text, s.barge_in_after_ms) for s in args.steps] == [
        ("say", "hi", None),
        ("say", "stop", 800.0),
        ("dtmf", "1#", None),
    ]


# --- The fake app ----------------------------------------------------------------------------


@dataclass
class FakeStream:
    """The app's end of one stream: what arrived (with times) and helpers to act."""

    received: list[tuple[float, codec.InboundMessage]] = field(default_factory=list)
    sent: dict[str, float] = field(default_factory=dict)  # "mark:x" / "clear" / "audio:x" → time
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    custom_parameters: dict[str, str] = field(default_factory=dict)
    sid: str = ""

    async def send_audio(self, mulaw: bytes) -> None:
        for i in range(0, len(mulaw), 160):
            await websocket.send(codec.media_message(self.sid, mulaw[i : i + 160]))

    async def send_mark(self, name: str) -> None:
        self.sent[f"mark:{name}"] = time.monotonic()
        await websocket.send(codec.mark_message(self.sid, name))

    async def wait_for(
        self, match: Callable[[codec.InboundMessage], bool], after: float = 0.0
    ) -> float:
        """Arrival time of the first message matching `match` that arrived after `after`."""
        while True:
            for at, msg in self.received:
                if at > after and match(msg):
                    return at
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)

    def echo(self, name: str) -> float | None:
        for at, msg in self.received:
            if isinstance(msg, codec.Mark) and msg.name == name:
                return at
        return None


def loud(msg: codec.InboundMessage) -> bool:
    return isinstance(msg, codec.Media) and is_speech_like(msg.payload)


def quiet(msg: codec.InboundMessage) -> bool:
    return isinstance(msg, codec.Media) and not is_speech_like(msg.payload)


Scenario = Callable[[FakeStream], Awaitable[None]]


@dataclass
class FakeApp:
    port: int
    scenario: Scenario | None = None
    after_stream: str = "<Response><Hangup/></Response>"
    forms: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, scenario: Scenario, after_stream: str = "<Response><Hangup/></Response>"):
        self.scenario, self.after_stream = scenario, after_stream
        self.forms.clear()
        self.rejected.clear()
        self.streams.clear()

    def config(self, **overrides: Any) -> CallConfig:
        settings = {"url": self.url, "public_url": PUBLIC, "auth_token": TOKEN}
        return CallConfig(**(settings | overrides))


def build_fake(fake: FakeApp) -> Quart:
    app = Quart("fake-voice-app")
    validator = RequestValidator(TOKEN)

    def xml(body: str) -> Response:
        return Response(body, mimetype="text/xml")

    async def signed_form() -> dict[str, str] | None:
        form = await request.form
        url = (
            PUBLIC
            + request.path
            + (f"?{request.query_string.decode()}" if request.query_string else "")
        )
        if not validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            fake.rejected.append(request.path)
            return None
        fake.forms.append((request.path, dict(form)))
        return dict(form)

    @app.post("/twiml/voice")
    async def voice() -> Response:
        if await signed_form() is None:
            return Response("forbidden", status=403)
        return xml(
            f'<Response><Gather action="{PUBLIC}/twiml/pin" input="dtmf speech" '
            'actionOnEmptyResult="true"><Say>Please enter or say your PIN.</Say></Gather>'
            "<Say>No PIN. Goodbye.</Say><Hangup/></Response>"
        )

    @app.post("/twiml/pin")
    async def pin() -> Response:
        form = await signed_form()
        if form is None:
            return Response("forbidden", status=403)
        if form.get("Digits") != "4826":
            return xml("<Response><Say>Wrong PIN.</Say><Hangup/></Response>")
        return xml(
            f'<Response><Connect action="{PUBLIC}/twiml/stream-ended">'
            f'<Stream url="wss://voice.example.test/streams/twilio">'
            '<Parameter name="session" value="tok-123"/></Stream></Connect></Response>'
        )

    @app.post("/twiml/stream-ended")
    async def stream_ended() -> Response:
        if await signed_form() is None:
            return Response("forbidden", status=403)
        return xml(fake.after_stream)

    @app.post("/twiml/status")
    async def status() -> Response:
        if await signed_form() is None:
            return Response("forbidden", status=403)
        return xml("<Response/>")

    @app.websocket("/streams/twilio")
    async def stream() -> Any:
        url = "wss://voice.example.test" + websocket.path
        if not validator.validate(url, {}, websocket.headers.get("X-Twilio-Signature", "")):
            fake.rejected.append(websocket.path)
            return "forbidden", 403
        await websocket.accept()
        s = FakeStream()
        fake.streams.append(s)

        async def read() -> None:
            while True:
                msg = codec.parse(await websocket.receive())
                if isinstance(msg, codec.Start):
                    s.custom_parameters, s.sid = msg.custom_parameters, msg.stream_sid
                s.received.append((time.monotonic(), msg))
                s.arrived.set()

        reader = asyncio.create_task(read())
        try:
            await s.wait_for(lambda m: isinstance(m, codec.Start))
            assert fake.scenario is not None
            await fake.scenario(s)
            await s.wait_for(lambda m: isinstance(m, codec.Stop))
        finally:
            reader.cancel()

    return app


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeApp]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = FakeApp(port)
    app = build_fake(state)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    def run() -> None:
        nonlocal stop
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield state
    assert stop is not None
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)


# --- Calls against the fake --------------------------------------------------------------------


async def test_marks_echo_when_their_audio_has_played_and_reply_latency(fake: FakeApp) -> None:
    reply_delay = 0.3

    async def scenario(s: FakeStream) -> None:
        await s.send_mark("idle")  # nothing queued: echoed at once
        await asyncio.sleep(0.2)
        s.sent["audio:greeting"] = time.monotonic()
        await s.send_audio(tone(0.5))
        await s.send_mark("half")
        await s.send_audio(tone(0.5))
        await s.send_mark("end")
        # The caller's line: reply a known time after its first quiet frame.
        first_loud = await s.wait_for(loud)
        await s.wait_for(quiet, after=first_loud)
        await asyncio.sleep(reply_delay)
        s.sent["audio:reply"] = time.monotonic()
        await s.send_audio(tone(0.4))

    fake.reset(scenario)
    line = tone(0.6, 300.0)
    config = fake.config(steps=[Step("wav", "line.wav", audio=line)], quiet_ms=300)
    report = await run_call(config)

    assert report.outcome == "caller_hangup", report.detail
    assert not fake.rejected
    paths = [path for path, _ in fake.forms]
    assert paths == ["/twiml/voice", "/twiml/pin", "/twiml/status"]
    voice_form = fake.forms[0][1]
    assert voice_form["From"] == "+15005550001" and voice_form["Direction"] == "inbound"
    assert voice_form["CallSid"] == report.call_sid and voice_form["CallStatus"] == "ringing"
    assert fake.forms[1][1]["Digits"] == "4826"  # the demo PIN by default

    s = fake.streams[0]
    assert s.custom_parameters == {"session": "tok-123"}
    assert s.echo("idle") - s.sent["mark:idle"] < 0.05  # type: ignore[operator]
    greeting_at = s.sent["audio:greeting"]
    for name, played in (("half", 0.5), ("end", 1.0)):
        echoed = s.echo(name)
        assert echoed is not None
        assert played - 0.005 <= echoed - greeting_at <= played + 0.05, name
    assert isinstance(s.received[-1][1], codec.Stop)

    greeting, turn = report.turns
    assert greeting.latency_arrival_s == pytest.approx(0.2, abs=0.05)
    assert turn.said == "line.wav" and not turn.barge_in
    assert turn.end is not None and turn.start is not None
    assert turn.end - turn.start == pytest.approx(0.6 - 0.02, abs=0.03)  # 30 frames' send times
    # Against what the fake did: it sent the reply at a known moment after the line ended.
    expected = s.sent["audio:reply"] - turn.end
    assert reply_delay < expected < reply_delay + 0.1
    assert turn.latency_arrival_s == pytest.approx(expected, abs=0.015)
    assert turn.latency_played_s == pytest.approx(expected, abs=0.015)  # queue was idle
    assert report.marks_echoed == 3


async def test_clear_releases_pending_marks_at_once_and_stops_the_audio(fake: FakeApp) -> None:
    async def scenario(s: FakeStream) -> None:
        s.sent["audio:reply"] = time.monotonic()
        for i in range(1, 7):  # 3 s of reply with a mark every 0.5 s, sent in one burst
            await s.send_audio(tone(0.5))
            await s.send_mark(f"r{i}")
        await s.wait_for(loud)  # the caller talks over it
        await asyncio.sleep(0.15)
        s.sent["clear"] = time.monotonic()
        await websocket.send(codec.clear_message(s.sid))

    fake.reset(scenario)
    line = tone(0.6, 300.0)
    step = Step("wav", "stop.wav", barge_in_after_ms=600, audio=line)
    report = await run_call(fake.config(steps=[step], reply_timeout_s=1.0, record=True))

    assert report.outcome == "caller_hangup", report.detail
    s = fake.streams[0]
    start, cleared = s.sent["audio:reply"], s.sent["clear"]
    r1 = s.echo("r1")
    assert r1 is not None and 0.495 <= r1 - start <= 0.55  # played before the clear
    for i in range(2, 7):  # pending at the clear: echoed immediately, in order
        echoed = s.echo(f"r{i}")
        assert echoed is not None and 0 <= echoed - cleared < 0.05
    names = [m.name for _, m in s.received if isinstance(m, codec.Mark)]
    assert names == [f"r{i}" for i in range(1, 7)]

    turn = report.turns[1]
    assert turn.start is not None
    assert turn.start - start == pytest.approx(0.6, abs=0.05)  # 600 ms into the reply
    assert turn.barge_in and turn.barge_in_cleared
    assert turn.barge_in_latency_s == pytest.approx(cleared - turn.start, abs=0.01)
    assert 0.15 < turn.barge_in_latency_s < 0.25  # type: ignore[operator]
    assert turn.reply_timed_out  # the fake never answered the line
    # The recording: the reply is heard until the clear, then nothing.
    rec, t0 = report.recording, report.stream_started_at
    assert rec is not None and t0 is not None
    stop_at = int((cleared - t0) * 8000)
    assert is_speech_like(rec[stop_at - 800 : stop_at - 640])
    assert set(rec[stop_at + 160 : stop_at + 4000]) == {0xFF}
    assert report.clears == 1


async def test_a_bad_signature_is_refused(fake: FakeApp) -> None:
    async def scenario(s: FakeStream) -> None:  # never reached
        raise AssertionError("the stream must not open")

    fake.reset(scenario)
    report = await run_call(fake.config(auth_token="not-the-token"))
    assert report.outcome == "error" and "403" in report.detail
    assert fake.rejected == ["/twiml/voice"] and not fake.streams


def test_cli_writes_the_recording_and_report(
    fake: FakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(s: FakeStream) -> None:
        await s.send_audio(tone(0.3))
        await s.send_mark("bye")
        await s.wait_for(lambda m: isinstance(m, codec.Mark))
        await websocket.close(1000)  # the app ends the stream (say, for a transfer)

    fake.reset(scenario, after_stream="<Response/>")
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("PUBLIC_BASE_URL", PUBLIC)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("PORT", str(fake.port))  # the default --url is the local app
    wav_path, json_path = tmp_path / "heard.wav", tmp_path / "run.json"
    code = cli.main(["--record", str(wav_path), "--report", str(json_path)])
    assert code == 0
    assert not fake.rejected

    run = json.loads(json_path.read_text())
    assert set(run) == {"calls", "summary"}
    call = run["calls"][0]
    assert call["outcome"] == "transferred"
    assert {
        "call_sid",
        "duration_ms",
        "turns",
        "timeline",
        "marks_echoed",
        "protocol_errors",
    } <= set(call)
    turn = call["turns"][0]
    assert {
        "caller_said",
        "transcript",
        "assistant_words",
        "latency_arrival_ms",
        "latency_played_ms",
        "barge_in",
        "barge_in_latency_ms",
    } <= set(turn)
    assert run["summary"]["outcomes"] == {"transferred": 1}
    assert set(run["summary"]["greeting_ms"]) == {"n", "p50", "p95", "p99", "max"}

    with wave.open(str(wav_path)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
        seconds = wav.getnframes() / 8000
        pcm = wav.readframes(wav.getnframes())
    # The recording runs in real time from the stream's start to the end of the call.
    expected = (call["duration_ms"] - call["stream_started_ms"]) / 1000
    assert seconds == pytest.approx(expected, abs=0.03)
    loud_frames = sum(
        is_speech_like(pcm16_to_ulaw(pcm[i : i + 320])) for i in range(0, len(pcm), 320)
    )
    assert 14 <= loud_frames <= 16  # 0.3 s of audio heard once


@pytest.mark.skipif(
    not (Path("/usr/bin/flite").exists() or Path("/usr/bin/espeak-ng").exists()),
    reason="needs flite or espeak-ng",
)
def test_lines_are_synthesized_and_trimmed() -> None:
    audio = synthesize("what is on my todo list")
    assert 0.6 < len(audio) / 8000 < 3.0
    assert is_speech_like(audio[:160]) or is_speech_like(audio[160:320])
