"""Production readiness, part 2: bad input from the network.

* The Media Streams codec: valid messages, mutated anywhere in their JSON tree or their text,
  raise nothing but `CodecError`; any sequence of frames leaves the stream validator sane.
* The live `/streams/twilio` endpoint (real sockets, the caller simulator): malformed frames in
  the middle of a call (binary, garbage JSON, another stream's messages, replays, a second start,
  a foreign stop, oversized frames) are dropped one by one and the call goes on.
* Every webhook and API endpoint, through the Quart test client: hypothesis-made methods, bodies,
  headers, signatures, sessions and CSRF tokens. Nothing answers 5xx, and a request that is
  refused (bad signature, no session, bad CSRF, wrong method...) changes nothing in Redis or
  PostgreSQL.

Requests that still produce a 500 today are described by `known_500` (webhooks) and
`known_api_500` (sign-in): each kind has an xfail(strict) reproducer, and the fuzzers steer around
exactly those (so they keep guarding everything else). When a fix lands the reproducer XPASSes:
drop its marker and its clause in the predicate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from quart import Quart
from quart.testing import WebsocketResponseError
from twilio.request_validator import RequestValidator

from tests.conftest import ADMIN_URL, TWILIO_AUTH_TOKEN
from tests.edge_fixtures import Tenant, edge_settings_for, make_tenant, twilio_signature
from tests.fault_fixtures import (
    CallResult,
    PrivateRedis,
    place_call,
    private_database,
    rig,
    tone_wav,
)
from voice_app.app import create_app
from voice_app.auth.secrets import hash_secret
from voice_app.config import Settings
from voice_app.db.seed import seed_demo
from voice_app.simulator import stream as simulator_stream
from voice_app.simulator.caller import Step
from voice_app.state import keys
from voice_app.state.store import StateStore
from voice_app.streams import codec

BASE = "https://voice.example.test"  # PUBLIC_BASE_URL of the edge app
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# The codec ----------------------------------------------------------------------------------

sids = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=2, max_size=34)
counters = st.integers(1, 10**9)
audio = st.binary(max_size=400)

valid_messages: st.SearchStrategy[codec.InboundMessage] = st.one_of(
    st.builds(codec.Connected),
    st.builds(
        codec.Start,
        stream_sid=sids,
        call_sid=sids,
        account_sid=sids,
        custom_parameters=st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=3),
        sequence=counters,
    ),
    st.builds(codec.Media, sids, audio, counters, counters, counters),
    st.builds(codec.Dtmf, sids, st.sampled_from(sorted(codec.DTMF_DIGITS)), counters),
    st.builds(codec.Mark, sids, sids, counters),
    st.builds(codec.Stop, sids, sids, counters, sids),
)

awkward_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["", " ", "0", "-1", "1e3", "\ud800", "\x00", "８", "AAAA====", "=", "9" * 5000, "NaN"]
    ),
    st.just([[[[[[[[[[[]]]]]]]]]]]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree: dict keys and list indices, at any depth."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*prefix, index))
    return found


def mutated(tree: Any, path: tuple[Any, ...], operation: str, value: Any) -> Any:
    """A copy of `tree` with the node at `path` replaced, deleted, or wrapped in a list."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    if rest:
        copy[head] = mutated(tree[head], rest, operation, value)
    elif operation == "delete":
        del copy[head]
    elif operation == "wrap":
        copy[head] = [tree[head]]
    else:
        copy[head] = value
    return copy


def parses_or_codec_error(frame: str | bytes) -> codec.InboundMessage | None:
    try:
        message = codec.parse(frame)
    except codec.CodecError:
        return None
    assert isinstance(message, codec.InboundMessage.__args__)  # type: ignore[attr-defined]
    return message


@settings(max_examples=300, deadline=None)
@given(
    valid_messages,
    st.data(),
    st.sampled_from(["replace", "delete", "wrap"]),
    awkward_values,
)
def test_a_message_mutated_anywhere_in_its_tree_raises_only_codec_error(
    message: codec.InboundMessage, data: st.DataObject, operation: str, value: Any
) -> None:
    tree = json.loads(codec.encode(message))
    path = data.draw(st.sampled_from(paths(tree)), label="path")
    text = json.dumps(mutated(tree, path, operation, value), allow_nan=True)
    parses_or_codec_error(text)
    parses_or_codec_error(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(valid_messages, st.integers(0, 2000), st.integers(0, 8), st.binary(max_size=8))
def test_a_message_damaged_as_text_raises_only_codec_error(
    message: codec.InboundMessage, at: int, cut: int, junk: bytes
) -> None:
    raw = codec.encode(message).encode()
    parses_or_codec_error(raw[:at] + junk + raw[at + cut :])  # spliced, truncated, garbled


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000 + "]" * 100_000,  # nesting deeper than the JSON parser's recursion
        '{"event": "media", "sequenceNumber": ' + "9" * 5000 + "}",  # beyond int() digit limit
        "\ufeff" + codec.encode_connected(),  # a byte-order mark
        b"\xef\xbb\xbf" + codec.encode_connected().encode(),
        '{"event": "media", "event": "start"}',  # duplicate keys
        "x" * (codec.MAX_FRAME + 1),
        b"\x00" * (codec.MAX_FRAME + 1),
    ],
    ids=["deep", "huge-int", "bom-text", "bom-bytes", "dup-keys", "long-text", "long-bytes"],
)
def test_pathological_frames_raise_only_codec_error(frame: str | bytes) -> None:
    parses_or_codec_error(frame)


def stream_frames(sid: str, call: str) -> list[str]:
    side = codec.TwilioSide(sid, call, "AC" + "1" * 32)
    frames = [side.connected(), side.start({"session": "t"})]
    frames += [side.media(b"\xff" * 160) for _ in range(3)] + [side.dtmf("5"), side.mark("m1")]
    return [*frames, side.stop()]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_sequence_of_frames_leaves_the_validator_sane(data: st.DataObject) -> None:
    good = stream_frames("MZ1", "CA1") + stream_frames("MZ2", "CA2")  # two streams interleaved
    junk = st.one_of(st.text(max_size=40), st.binary(max_size=40))
    frames = data.draw(st.lists(st.one_of(st.sampled_from(good), junk), max_size=30))
    validator = codec.StreamValidator()
    last_media = 0
    for frame in frames:
        message = parses_or_codec_error(frame)
        if message is None:
            continue
        stopped = validator.stopped
        verdict = validator.check(message)
        if stopped:
            assert not verdict.ok  # nothing after stop
        if verdict.ok and isinstance(message, codec.Media | codec.Dtmf | codec.Mark | codec.Stop):
            assert validator.start is not None and message.stream_sid == validator.stream_sid
        if verdict.ok and isinstance(message, codec.Media):
            assert message.sequence > last_media  # accepted media only moves forward
            last_media = message.sequence


# The live stream endpoint --------------------------------------------------------------------


class TamperingSocket:
    """Wraps the simulator's WebSocket (Twilio's side): `inject(message)` names frames to send
    ahead of a message the simulator is about to send."""

    def __init__(self, ws: Any, inject: Callable[[str], list[str | bytes]]) -> None:
        self._ws = ws
        self._inject = inject

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            for bad in self._inject(message):
                await self._ws.send(bad)
        await self._ws.send(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def __aiter__(self) -> Any:
        return self._ws.__aiter__()

    async def __aenter__(self) -> TamperingSocket:
        await self._ws.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._ws.__aexit__(*exc)


def tamper_with_streams(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[], Callable[[str], list[str | bytes]]]
) -> None:
    """Every stream the simulator opens from now on goes through a TamperingSocket."""
    real_connect = simulator_stream.connect

    async def connect(*args: Any, **kwargs: Any) -> TamperingSocket:
        return TamperingSocket(await real_connect(*args, **kwargs), make())

    monkeypatch.setattr(simulator_stream, "connect", connect)


FOREIGN_SID = "MZ" + "0" * 32


def malformed_frames(start: dict[str, Any]) -> list[str | bytes]:
    """One of each kind of bad frame, for the stream that `start` began."""
    sid, body = start["streamSid"], start["start"]
    call, account = body["callSid"], body["accountSid"]
    not_base64 = json.loads(
        codec.encode_media(sid, b"\xff" * 160, sequence=2, chunk=1, timestamp_ms=0)
    )
    not_base64["media"]["payload"] = "not base64!"
    return [
        b"\x7f\xff" * 160,  # raw audio in a binary frame
        "{not json",
        "[]",
        "null",
        json.dumps({"event": 42}),
        json.dumps({"event": "telepathy", "streamSid": sid}),
        json.dumps({"event": "media", "streamSid": sid}),  # no media body
        json.dumps(not_base64),
        codec.encode_media(FOREIGN_SID, b"\xff" * 160, sequence=10**6, chunk=10**6,
                           timestamp_ms=10**6),  # another stream's audio
        codec.encode_media(sid, b"\xff" * 160, sequence=2, chunk=1, timestamp_ms=0),  # a replay
        codec.encode_start(sid, call, account, {"session": "forged"}, sequence=3),  # 2nd start
        codec.encode_connected(),  # connected after start
        json.dumps({"event": "dtmf", "streamSid": sid, "sequenceNumber": "4",
                    "dtmf": {"digit": "X"}}),
        codec.encode_stop(FOREIGN_SID, call, account, sequence=10**6),  # someone else's stop
        "[" * 100_000,  # nesting too deep to parse
        json.dumps({"event": "media", "streamSid": sid, "pad": "x" * 1_000_000}),  # 1 MB
    ]  # fmt: skip


Plan = Callable[[dict[str, Any]], tuple[str, list[str | bytes]]]


class Injector:
    """For the call's first stream: the frames `plan(start)` names, slipped in ahead of the
    `start` message ("before-start") or one second into the stream ("mid-call")."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.frames: list[str | bytes] = []
        self.when = ""
        self.media = 0
        self.injected = 0

    def __call__(self, message: str) -> list[str | bytes]:
        frame = json.loads(message)
        if frame["event"] == "start" and not self.when:
            self.when, self.frames = self.plan(frame)
            if self.when == "before-start":
                return self._release()
        elif frame["event"] == "media" and self.when == "mid-call":
            self.media += 1
            if self.media == 50:  # 20 ms frames: one second in, while the greeting plays
                return self._release()
        return []

    def _release(self) -> list[str | bytes]:
        frames, self.frames, self.when = self.frames, [], "done"
        self.injected = len(frames)
        return frames


@dataclass
class LiveCall:
    result: CallResult
    dropped: list[str]  # the engine's "dropped a frame" warnings, one per frame it dropped
    injected: int


async def call_with_tampering(
    settings_: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    plan: Plan,
) -> LiveCall:
    """A two-line call whose first stream gets the frames of `plan` (later streams, if the app
    makes Twilio reconnect, are left alone)."""
    await seed_demo(database_url)
    wav = tone_wav(tmp_path / "line.wav")
    injector = Injector(plan)
    streams: list[Callable[[str], list[str | bytes]]] = []

    def make() -> Callable[[str], list[str | bytes]]:
        streams.append(injector if not streams else (lambda _: []))
        return streams[-1]

    tamper_with_streams(monkeypatch, make)
    caplog.set_level(logging.WARNING, logger="voice_app.streams")
    async with rig(settings_, None) as r:
        r.deepgram.expect_utterances(["what is on my todo list", "who is on my team"])
        r.claude.reply("You have three todos.")
        r.claude.reply("Your team is the launch team.")
        result = await place_call(r, database_url, [Step("wav", wav), Step("wav", wav)])
    dropped = [
        rec.getMessage()
        for rec in caplog.records
        if rec.name.startswith("voice_app.streams") and rec.getMessage().startswith("dropped")
    ]
    return LiveCall(result, dropped, injector.injected)


async def test_malformed_frames_mid_call_are_dropped_and_the_call_goes_on(
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = await call_with_tampering(
        settings,
        database_url,
        tmp_path,
        monkeypatch,
        caplog,
        lambda start: ("mid-call", malformed_frames(start)),
    )
    run = live.result
    assert (run.report.outcome, run.report.detail) == ("caller_hangup", "script done"), (
        run.describe()
    )
    assert run.answered(1) and run.answered(2), run.describe()
    assert "Your team is the launch team." in run.said("assistant")
    # Each bad frame was dropped on its own, and nothing else was (one call, one stream).
    assert live.injected == len(live.dropped) == 16, live.dropped


async def test_media_before_start_costs_a_reconnect_not_the_call(
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Media between `connected` and `start` is a broken peer to _await_start: it closes the
    stream (1008) and Twilio's <Connect action> reconnects it. Real Twilio never sends media
    first, so the strictness is a policy; what matters is that the call survives it."""

    def early_media(start: dict[str, Any]) -> tuple[str, list[str | bytes]]:
        sid = start["streamSid"]
        media = codec.encode_media(sid, b"\xff" * 160, sequence=1, chunk=1, timestamp_ms=0)
        return "before-start", [media]

    live = await call_with_tampering(
        settings, database_url, tmp_path, monkeypatch, caplog, early_media
    )
    run = live.result
    assert (run.report.outcome, run.report.detail) == ("caller_hangup", "script done"), (
        run.describe()
    )
    assert run.answered(1) and run.answered(2), run.describe()
    assert "Your team is the launch team." in run.said("assistant")


# HTTP: state snapshots ------------------------------------------------------------------------

TABLES = [
    "tenants", "users", "teams", "team_members", "todos", "calendar_accounts", "calendar_events",
    "calls", "messages", "tool_calls", "agents", "security_events",
]  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    redis: dict[str, tuple[bytes | None, int]]  # key → (DUMP, PTTL)
    tables: dict[str, str]  # table → md5 of all its rows

    def changes_since(self, before: Snapshot) -> list[str]:
        changed = [f"table {t}" for t in TABLES if self.tables[t] != before.tables[t]]
        for key, (value, _) in self.redis.items():
            if before.redis.get(key, (None, 0))[0] != value:
                changed.append(f"redis {key!r}")
        for key, (_, ttl) in before.redis.items():
            if key not in self.redis and not 0 <= ttl < 120_000:  # gone, and not by expiry
                changed.append(f"redis {key!r} deleted")
        return changed


async def snapshot(redis: aioredis.Redis, owner: asyncpg.Connection) -> Snapshot:
    names = sorted(await redis.keys(f"{keys.PREFIX}*"))
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.dump(name)
            pipe.pttl(name)
        answers = await pipe.execute()
    state = {
        name.decode(): (answers[2 * i], int(answers[2 * i + 1])) for i, name in enumerate(names)
    }
    sums = ", ".join(
        f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {t} t)"
        for t in TABLES
    )
    row = await owner.fetchrow(f"SELECT {sums}")
    assert row is not None
    return Snapshot(state, dict(zip(TABLES, row, strict=True)))


@dataclass
class Edge:
    """The app for the HTTP tests, on a database and a redis-server of its own: every table and
    key is compared before and after a request, so no other test's late write may land there."""

    app: Quart
    settings: Settings
    state: StateStore
    redis: aioredis.Redis  # bytes, for DUMP
    owner: asyncpg.Connection  # the schema owner: sees every row

    async def snapshot(self) -> Snapshot:
        return await snapshot(self.redis, self.owner)


@pytest.fixture(scope="module")
async def edge(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    redis = PrivateRedis(tmp_path_factory.mktemp("edge-redis"))
    await redis.start()
    try:
        async with private_database(ADMIN_URL) as url:
            edge_settings = edge_settings_for(settings, database_url=url, redis_url=redis.url)
            app = create_app(edge_settings)
            async with app.test_app():
                owner = await asyncpg.connect(url)
                raw = aioredis.from_url(redis.url)
                state = StateStore.from_url(redis.url)
                try:
                    yield Edge(app, edge_settings, state, raw, owner)
                finally:
                    await state.close()
                    await raw.aclose()
                    await owner.close()
    finally:
        redis.kill()


# HTTP: Twilio webhooks -----------------------------------------------------------------------

WEBHOOKS = [
    "/twiml/voice",
    "/twiml/account",
    "/twiml/pin",
    "/twiml/stream-ended",
    "/twiml/status",
    "/twiml/stream-status",
    "/twiml/transfer-done",
]
FIELDS = [
    "CallSid", "AccountSid", "From", "To", "CallStatus", "Direction", "Digits", "SpeechResult",
    "SequenceNumber", "Timestamp", "CallDuration", "StreamEvent", "StreamSid", "StreamError",
    "DialCallStatus", "Confidence",
]  # fmt: skip
field_values = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"CA[0-9a-f]{32}", fullmatch=True),
    st.integers(-(2**31), 2**31 - 1).map(str),
    st.sampled_from(
        [
            "", "+15005550001", "+1555", "client:t00_u00", "client:" + "x" * 300, "completed",
            "in-progress", "ringing", "busy", "stream-started", "stream-stopped", "stream-error",
            "Tue, 25 Nov 2025 10:00:00 +0000", "yesterday", "#", "*", "0", "1234#",
            "10000001", "4826", "x" * 3000,
        ]
    ),
)  # fmt: skip
forms = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8)
queries = st.sampled_from(["", "?attempt=2", "?attempt=x", "?attempt=-9", "?attempt=99999"])


def known_500(form: dict[str, str]) -> str | None:
    """Signed requests that used to crash with a 500 (each has a reproducer below)."""
    stored = ("CallSid", "From", "To", "CallStatus", "StreamSid", "StreamEvent")
    if any("\x00" in form.get(name, "") for name in stored):
        return "NUL in a stored field"
    for name in ("SequenceNumber", "CallDuration"):
        try:
            if not -(2**31) <= int(form.get(name, "").strip() or 0) < 2**31:
                return f"{name} beyond int32"
        except ValueError:
            pass
    if any(year in form.get("Timestamp", "") for year in ("9999", "0001")):
        return "a timestamp at the edge of datetime"
    return None


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/twiml/status", {"CallSid": "CA1\x00", "CallStatus": "completed"}),
        ("/twiml/voice", {"CallSid": "CA2", "From": "+1500555\x000001"}),
        ("/twiml/status", {"CallSid": "CA3", "SequenceNumber": "2200000000"}),
        ("/twiml/status", {"CallSid": "CA4", "CallDuration": "99999999999"}),
        ("/twiml/status", {"CallSid": "CA5", "Timestamp": "Fri, 31 Dec 9999 23:59:59 -1400"}),
    ],
    ids=["nul-callsid", "nul-from", "sequence-int32", "duration-int32", "timestamp-9999"],
)
async def test_known_500_signed_webhooks(edge: Edge, path: str, form: dict[str, str]) -> None:
    assert known_500(form)  # the fuzzer below steers around exactly these
    signature = twilio_signature(edge.settings, path, form)
    response = await edge.app.test_client().post(
        path, form=form, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code < 500


@FUZZ
@given(path=st.sampled_from(WEBHOOKS), query=queries, form=forms)
@example(path="/twiml/status", query="", form={"SequenceNumber": "-1", "Timestamp": "junk"})
@example(path="/twiml/pin", query="?attempt=x", form={"CallSid": "CA1", "Digits": "1" * 3000})
async def test_signed_webhooks_never_answer_5xx(
    edge: Edge, path: str, query: str, form: dict[str, str]
) -> None:
    signature = twilio_signature(edge.settings, path + query, form)
    response = await edge.app.test_client().post(
        path + query, form=form, headers={"X-Twilio-Signature": signature}
    )
    # 400 only for what Twilio never sends (a NUL): everything else is answered.
    assert response.status_code in (200, 204, 400), (response.status_code, path, form)
    if response.status_code == 400:
        assert known_500(form) == "NUL in a stored field" or any("\x00" in v for v in form.values())
    if response.status_code == 200:
        assert response.mimetype == "text/xml"


SIGNATURE_VARIANTS = [
    "none", "garbage", "empty", "other path", "other params", "other token", "other host",
    "other query",
]  # fmt: skip


def badly_signed(
    edge_settings: Settings, variant: str, path: str, query: str, form: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """A target and headers whose signature does not cover this very request."""
    url = f"{edge_settings.public_base_url}{path}{query}"
    tampered = {**form, "Digits": form.get("Digits", "") + "1"}
    signatures = {
        "none": None,
        "garbage": "bm90IGEgc2lnbmF0dXJl",
        "empty": "",
        "other path": twilio_signature(edge_settings, "/twiml/other" + query, form),
        "other params": twilio_signature(edge_settings, path + query, tampered),
        "other token": RequestValidator("not-our-token").compute_signature(url, form),
        "other host": RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
            f"https://evil.example{path}{query}", form
        ),
        "other query": twilio_signature(edge_settings, path + "?attempt=7", form),
    }
    signature = signatures[variant]
    if variant == "other query" and query == "?attempt=7":
        query = "?attempt=8"
    return path + query, {} if signature is None else {"X-Twilio-Signature": signature}


@FUZZ
@given(
    path=st.sampled_from(WEBHOOKS),
    query=queries,
    form=forms,
    variant=st.sampled_from(SIGNATURE_VARIANTS),
    method=st.sampled_from(["POST", "GET", "PUT"]),
)
async def test_webhooks_with_a_bad_signature_are_refused_and_change_nothing(
    edge: Edge,
    path: str,
    query: str,
    form: dict[str, str],
    variant: str,
    method: str,
) -> None:
    target, headers = badly_signed(edge.settings, variant, path, query, form)
    before = await edge.snapshot()
    response = await edge.app.test_client().open(target, method=method, form=form, headers=headers)
    assert response.status_code == (403 if method == "POST" else 405), response.status_code
    changes = (await edge.snapshot()).changes_since(before)
    assert changes == [], changes


# HTTP: the caller page's and the agent console's APIs ----------------------------------------


@dataclass
class People:
    tenant: Tenant
    agent_id: uuid.UUID


@pytest.fixture(scope="module")
async def people(edge: Edge) -> People:
    tenant = await make_tenant(edge.owner)
    agent_id = await edge.owner.fetchval(
        "INSERT INTO agents (tenant_id, email, display_name, password_hash) "
        "VALUES ($1, $2, 'Fuzz Agent', $3) RETURNING id",
        tenant.tenant_id,
        f"fuzz-{uuid.uuid4().hex[:8]}@example.test",
        hash_secret("a long agent password"),
    )
    return People(tenant, agent_id)


API_PATHS = [
    "/api/auth/pin",
    "/api/auth/logout",
    "/api/me",
    "/api/voice/token",
    "/api/admin/security-events?limit=5",
    "/api/local/call",
    "/api/console/login",
    "/api/console/logout",
    "/api/console/me",
    "/api/console/context/abc",
    "/oauth/google/start",
    "/oauth/google/callback?state=x&code=y",
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/console/",
]
# Where a refused request may still change state, by design: a wrong PIN or password is counted
# (lockout) and audited. A refusal before the credentials are checked (403: no X-Requested-With
# or a foreign Origin; 400: not JSON) must change nothing there either.
COUNTS_FAILURES = {"/api/auth/pin", "/api/console/login"}
CSRF_GUARDED = {"/api/local/call": "browser", "/api/auth/logout": "browser",
                "/api/console/logout": "agent"}  # fmt: skip

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
json_bodies = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=8,
)
credentials = st.fixed_dictionaries(
    {},
    optional={
        "account_number": st.one_of(st.text(max_size=20), st.integers()),
        "pin": st.one_of(st.text(max_size=12), st.integers()),
        "email": st.text(max_size=40),
        "password": st.text(max_size=40),
    },
)
bodies = st.one_of(
    st.none(),
    st.tuples(st.just("json"), st.one_of(credentials, json_bodies)),
    st.tuples(st.just("form"), st.dictionaries(st.text(max_size=10), st.text(max_size=20))),
    st.tuples(st.just("raw"), st.binary(max_size=200)),
    st.just(("raw", b"{" + b" " * 300_000 + b"}")),  # beyond MAX_CONTENT_LENGTH
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
extra_headers = st.dictionaries(
    st.sampled_from(
        ["X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Content-Type",
         "Accept", "Authorization", "X-HTTP-Method-Override", "X-Twilio-Signature", "Referer"]
    ),
    header_values,
    max_size=3,
)  # fmt: skip


@dataclass
class ApiRequest:
    method: str
    path: str
    session: str  # none | garbage | browser | agent | swapped (each token in the other cookie)
    csrf: str  # none | garbage | browser | agent (whose CSRF token is sent)
    origin: str | None
    requested_with: bool
    body: tuple[str, Any] | None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # anything else


api_requests = st.builds(
    ApiRequest,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(API_PATHS),
    session=st.sampled_from(["none", "garbage", "browser", "agent", "swapped"]),
    csrf=st.sampled_from(["none", "garbage", "browser", "agent"]),
    origin=st.sampled_from([None, BASE, "https://evil.example", "null", BASE + ":8443"]),
    requested_with=st.booleans(),
    body=bodies,
    headers=extra_headers,
)


def known_api_500(request: ApiRequest) -> str | None:
    """Unauthenticated requests that used to crash with a 500 (reproducers below)."""
    if request.body is None or request.method != "POST" or request.path not in COUNTS_FAILURES:
        return None
    kind, value = request.body
    if kind == "json" and isinstance(value, dict) and "\x00" in str(value.get("email", "")):
        return "NUL in the console e-mail" if request.path == "/api/console/login" else None
    if kind == "raw":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return "a body that is not UTF-8"
    return None


async def prepare(
    store: StateStore, people: People, request: ApiRequest
) -> tuple[dict[str, str], dict[str, Any]]:
    """Fresh sessions for this request (it may end them), and its headers and body."""
    tenant = people.tenant
    browser = await store.create_session(
        kind="browser",
        tenant_id=str(tenant.tenant_id),
        subject_id=str(tenant.member.user_id),
        ttl_seconds=600,
    )
    agent = await store.create_session(
        kind="agent", tenant_id=str(tenant.tenant_id), subject_id=str(people.agent_id),
        ttl_seconds=600,
    )  # fmt: skip
    cookies = {
        "none": {},
        "garbage": {"va_session": "x" * 43, "va_console": "y" * 43},
        "browser": {"va_session": browser.token},
        "agent": {"va_console": agent.token},
        "swapped": {"va_session": agent.token, "va_console": browser.token},
    }[request.session]
    headers = {
        **request.headers,
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        "X-CSRF-Token": {"none": "", "garbage": "z" * 22, "browser": browser.csrf,
                         "agent": agent.csrf}[request.csrf],
    }  # fmt: skip
    if request.origin is not None:
        headers["Origin"] = request.origin
    if request.requested_with:
        headers["X-Requested-With"] = "fetch"
    body: dict[str, Any] = {}
    if request.body is not None:
        kind, value = request.body
        if kind == "raw":
            body["data"] = value
            headers["Content-Type"] = "application/json"
        else:
            body[kind] = value
    return headers, body


def may_change_state(request: ApiRequest, status: int) -> bool:
    """Whether this answer is one where the app was allowed to write anything."""
    if status < 300:
        return request.method == "POST"
    return status in (401, 429) and request.path in COUNTS_FAILURES


@FUZZ
@given(request=api_requests)
@example(ApiRequest("POST", "/api/local/call", "browser", "garbage", BASE, True, None))
@example(ApiRequest("POST", "/api/auth/logout", "browser", "agent", None, False, None))
@example(ApiRequest("POST", "/api/console/logout", "agent", "browser", None, True, None))
@example(ApiRequest("POST", "/api/auth/pin", "none", "none", "https://evil.example", True,
                    ("json", {"account_number": "1", "pin": "2"})))  # fmt: skip
async def test_api_requests_never_5xx_and_refusals_change_nothing(
    edge: Edge,
    people: People,
    request: ApiRequest,
) -> None:
    headers, body = await prepare(edge.state, people, request)
    before = await edge.snapshot()
    response = await edge.app.test_client().open(
        request.path, method=request.method, headers=headers, **body
    )
    status = response.status_code
    assert status < 500 or status == 503, (status, request)  # 503: not set up here, by design
    if not may_change_state(request, status):
        changes = (await edge.snapshot()).changes_since(before)
        assert changes == [], (status, request, changes)
    # The guards themselves: CSRF on state-changing POSTs, X-Requested-With + Origin on sign-in.
    own = CSRF_GUARDED.get(request.path)
    passes = request.session == request.csrf == own and request.origin in (None, BASE)
    if own and request.method == "POST" and not passes:
        expected = {403} if request.session == own else {204, 401}
        assert status in expected, (status, request)
    unlike_the_page = not request.requested_with or request.origin not in (None, BASE)
    if request.path in COUNTS_FAILURES and request.method == "POST" and unlike_the_page:
        assert status == 403, (status, request)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/console/login", json.dumps({"email": "a\x00@example.test", "password": "p"})),
        ("/api/auth/pin", b"\xff\xfe{}"),
        ("/api/console/login", b"\xff\xfe{}"),
        ("/api/auth/pin", "[" * 100_000 + "]" * 100_000),
        ("/api/console/login", "[" * 100_000 + "]" * 100_000),
    ],
    ids=["console-nul-email", "pin-not-utf8", "console-not-utf8", "pin-deep", "console-deep"],
)
async def test_known_500_sign_in_bodies(edge: Edge, path: str, body: str | bytes) -> None:
    response = await edge.app.test_client().post(
        path,
        data=body,
        headers={"Content-Type": "application/json", "X-Requested-With": "fetch", "Origin": BASE},
    )
    assert response.status_code < 500


# HTTP: WebSocket handshakes -------------------------------------------------------------------

SOCKETS = ["/streams/twilio", "/streams/local", "/api/calls/transcript?call_sid=CA1",
           "/api/console/events"]  # fmt: skip


@FUZZ
@given(
    path=st.sampled_from(SOCKETS),
    signature=st.sampled_from([None, "", "garbage", "signed for /streams/local"]),
    cookie=st.sampled_from([None, "va_session=" + "x" * 43, "va_console=" + "y" * 43, "a=b"]),
    origin=st.sampled_from([None, BASE, "https://evil.example"]),
)
async def test_websocket_handshakes_without_credentials_are_refused(
    edge: Edge,
    path: str,
    signature: str | None,
    cookie: str | None,
    origin: str | None,
) -> None:
    headers: dict[str, str] = {}
    if signature is not None:
        headers["X-Twilio-Signature"] = (
            RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
                edge.settings.public_ws_base_url + "/streams/local", {}
            )
            if signature.startswith("signed")
            else signature
        )
    if cookie is not None:
        headers["Cookie"] = cookie
    if origin is not None:
        headers["Origin"] = origin
    before = await edge.snapshot()
    with pytest.raises(WebsocketResponseError) as refused:
        async with edge.app.test_client().websocket(path, headers=headers) as ws:
            await ws.receive()
    assert refused.value.response.status_code in (401, 403), refused.value.response.status_code
    assert (await edge.snapshot()).changes_since(before) == []
