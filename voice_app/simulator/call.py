"""One simulated call end to end: webhooks and TwiML, then the Media Stream(s), then the report.

`run_call(config)` is the importable entry point: the CLI runs it once or N times concurrently,
benchmarks drive it in-process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from voice_app.config import DEV_TWILIO_AUTH_TOKEN, Settings
from voice_app.db.seed import DEMO_USERS
from voice_app.simulator import twiml_flow as tw
from voice_app.simulator.caller import Caller, Step
from voice_app.simulator.report import CallReport, Event, Outcome
from voice_app.simulator.stream import StreamContext, StreamEnd, StreamResult, run_stream
from voice_app.simulator.voice import load_wav, synthesize

DEMO = DEMO_USERS[0]
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
_STREAM_OUTCOME: dict[StreamEnd, Outcome] = {
    "caller_hangup": "caller_hangup",
    "timeout": "timeout",
    "error": "error",
    "closed_by_app": "stream_closed",
}


@dataclass
class CallConfig:
    url: str = DEFAULT_URL  # where to connect
    public_url: str = DEFAULT_URL  # what the app believes it is at: requests are signed for it
    auth_token: str = DEV_TWILIO_AUTH_TOKEN
    account_sid: str = DEFAULT_ACCOUNT_SID
    from_number: str = DEMO.phone  # the demo user's phone: caller ID suggests the account
    to_number: str = "+15005550006"
    account: str = DEMO.account_number
    pin: str = DEMO.pin
    gather_input: Literal["dtmf", "speech"] = "dtmf"
    steps: list[Step] = field(default_factory=list)
    voice_path: str = "/twiml/voice"
    status_path: str | None = "/twiml/status"  # call status callback at the end; None: skip
    quiet_ms: float = 700  # the assistant's reply is over after this much silence
    reply_timeout_s: float = 15.0
    hangup_after_s: float | None = None  # from the first webhook
    max_duration_s: float = 120.0
    record: bool = False  # keep what the caller heard (for --record / --transcribe)
    call_sid: str | None = None  # random when None
    max_webhooks: int = 25

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CallConfig:
        """The local app as configured: connect to 127.0.0.1:PORT, sign for PUBLIC_BASE_URL."""
        config = cls(
            url=f"http://127.0.0.1:{settings.port}",
            public_url=settings.public_base_url,
            auth_token=settings.twilio_auth_token or DEV_TWILIO_AUTH_TOKEN,
            account_sid=settings.twilio_account_sid or DEFAULT_ACCOUNT_SID,
        )
        return dataclasses.replace(config, **overrides)


async def prepare(steps: list[Step]) -> None:
    """Give every spoken step its audio (synthesized once per distinct line)."""
    for step in steps:
        if step.audio or step.kind == "dtmf":
            continue
        if step.kind == "say":
            step.audio = await asyncio.to_thread(synthesize, step.text)
        else:
            step.audio = await asyncio.to_thread(load_wav, step.text)


async def run_call(config: CallConfig, *, http: httpx.AsyncClient | None = None) -> CallReport:
    """Place one call against the app and return what happened. Never raises for app failures:
    they become the report's outcome "error" with a detail."""
    await prepare(config.steps)
    loop = asyncio.get_running_loop()
    call_sid = config.call_sid or "CA" + secrets.token_hex(16)
    report = CallReport(call_sid, started_at=loop.time())
    own_client = http is None
    client = http or httpx.AsyncClient(timeout=15.0)
    try:
        call = _Call(config, report, client)
        try:
            async with asyncio.timeout(config.max_duration_s + 30):
                report.outcome, report.detail = await call.run()
        except TimeoutError:
            report.outcome, report.detail = "timeout", "the call did not finish"
        report.ended_at = loop.time()
        call.finish()
        await call.status_callback()
    finally:
        if own_client:
            await client.aclose()
    return report


@dataclass(frozen=True, slots=True)
class _Next:
    """The next webhook request to make."""

    url: str
    method: str = "POST"
    form: dict[str, str] = field(default_factory=dict)
    after_stream: bool = False  # the <Connect action> called when a stream ends


class _Call:
    def __init__(self, config: CallConfig, report: CallReport, http: httpx.AsyncClient) -> None:
        self.config, self.report = config, report
        self.loop = asyncio.get_running_loop()
        params = tw.CallParams(
            report.call_sid, config.account_sid, config.from_number, config.to_number
        )
        self.hooks = tw.Webhooks(http, config.url, config.auth_token, params)
        self.caller = Caller(
            config.steps, quiet_s=config.quiet_ms / 1000, reply_timeout_s=config.reply_timeout_s
        )
        start = report.started_at
        self.stream = StreamContext(
            connect_base=config.url,
            auth_token=config.auth_token,
            call_sid=report.call_sid,
            account_sid=config.account_sid,
            caller=self.caller,
            note=self.note,
            hangup_at=None if config.hangup_after_s is None else start + config.hangup_after_s,
            deadline=start + config.max_duration_s,
            record=config.record,
        )
        self.answered = False

    def note(self, kind: str, text: str) -> None:
        self.report.events.append(Event(self.loop.time(), kind, text))

    async def run(self) -> tuple[Outcome, str]:
        config = self.config
        request = _Next(config.public_url + config.voice_path)
        status = "ringing"
        for _ in range(config.max_webhooks):
            try:
                body = await self.hooks.request(
                    request.url, status=status, extra=request.form, method=request.method
                )
                verbs = tw.parse_twiml(body, request.url)
            except (tw.WebhookError, tw.TwimlError) as error:
                self.note("error", str(error))
                return "error", str(error)
            self.answered, status = True, "in-progress"
            result = await self._run_verbs(verbs)
            if isinstance(result, _Next):
                request = result
                continue
            if not verbs and request.after_stream:
                # The app replaced the call's TwiML by REST (a transfer): nothing left for us.
                return "transferred", "the stream ended and the app had no TwiML left to run"
            return result
        return "error", f"more than {config.max_webhooks} webhooks"

    async def _run_verbs(self, verbs: list[tw.Verb]) -> _Next | tuple[Outcome, str]:
        """Run a document: the next request to make, or how the call ended."""
        stream_closed = False
        for verb in verbs:
            match verb:
                case tw.Say(text):
                    self.note("app says", text)
                case tw.Hangup():
                    self.note("hangup", "the app hung up")
                    return "app_hangup", ""
                case tw.Dial(target):
                    self.note("dial", target)
                    return "transferred", f"<Dial> {target}"
                case tw.Redirect(url, method):
                    return _Next(url, method)
                case tw.Gather():
                    answer = self._answer(verb)
                    if answer or verb.action_on_empty_result:
                        return _Next(verb.action, verb.method, answer)
                case tw.Connect(stream=None):
                    self.note("twiml", "<Connect> without <Stream> skipped")
                case tw.Connect(stream=target, action=action, method=method):
                    assert target is not None
                    result = await self._stream(target)
                    if result.end != "closed_by_app":
                        return _STREAM_OUTCOME[result.end], result.detail
                    self.note("stream", "the app closed the stream")
                    if action:
                        return _Next(action, method, after_stream=True)
                    stream_closed = True
                case tw.Other(name):
                    self.note("twiml", f"<{name}> skipped")
        if stream_closed:
            return "stream_closed", "no TwiML after the stream"
        return "app_hangup", "the TwiML ended"

    def _answer(self, gather: tw.Gather) -> dict[str, str]:
        kind = tw.gather_kind(gather)
        self.note("gather", f"{kind}: {gather.prompt}")
        digits = {"account": self.config.account, "pin": self.config.pin}.get(kind, "")
        if not digits:
            self.note("caller", "(silence)")
            return {}
        shown = digits if kind == "account" else "*" * len(digits)
        self.note("caller keys" if self.config.gather_input == "dtmf" else "caller says", shown)
        return tw.gather_result(digits, gather, self.config.gather_input)

    async def _stream(self, target: tw.StreamTarget) -> StreamResult:
        self.note("stream", f"connecting to {target.url}")
        stream_sid = "MZ" + secrets.token_hex(16)
        return await run_stream(target, self.stream, stream_sid)

    def finish(self) -> None:
        """Copy what the streams learned into the report."""
        report, ctx = self.report, self.stream
        report.turns = self.caller.turns
        report.protocol_errors = ctx.protocol_errors
        report.protocol_error_count = ctx.protocol_error_count
        report.max_frame_lag_s = ctx.max_frame_lag_s
        if ctx.playback is not None:
            assert report.ended_at is not None
            ctx.playback.advance(report.ended_at)
            report.marks_echoed = ctx.playback.marks_echoed
            report.clears = ctx.playback.clears
            if ctx.playback.recording is not None:
                report.recording = bytes(ctx.playback.recording)
            report.stream_started_at = ctx.playback.t0

    async def status_callback(self) -> None:
        """Twilio's final call status callback (configured on the number, not in TwiML)."""
        path = self.config.status_path
        if not path or not self.answered:
            return
        duration = str(round(self.report.duration_s))
        try:
            await self.hooks.request(
                self.config.public_url + path,
                status="completed",
                extra={"CallDuration": duration, "CallbackSource": "call-progress-events"},
            )
        except tw.WebhookError as error:
            self.note("status", f"status callback failed: {error}")
