"""The caller page in headless Chromium against the app served by a real Hypercorn on 127.0.0.1.

Needs Debian's Chromium (`apt-get install -y chromium`) and the vendored Voice SDK
(`bash voice_app/web/build.sh`, run here if the file is missing). Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import math
import re
import shutil
import socket
import subprocess
import time
import warnings
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from playwright.async_api import Browser, Page, WebSocketRoute, async_playwright, expect

from voice_app.app import create_app
from voice_app.state import keys
from voice_app.state.store import StateStore

pytest.register_assert_rewrite("tests.edge_fixtures")
from tests.edge_fixtures import API_KEY_SECRET, Tenant, edge_settings_for  # noqa: E402

pytest_plugins = ["tests.edge_fixtures"]
pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
VENDOR = ROOT / "voice_app" / "web" / "static" / "vendor" / "twilio.min.js"
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class Served:
    url: str
    settings: Any


@pytest.fixture(scope="module")
async def server(settings) -> AsyncIterator[Served]:
    if not VENDOR.exists():
        subprocess.run(["bash", str(ROOT / "voice_app/web/build.sh")], check=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    served_settings = edge_settings_for(settings, public_base_url=url, local_mode=True)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(create_app(served_settings), config, shutdown_trigger=stop.wait)
    )
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("hypercorn did not start")
    yield Served(url, served_settings)
    stop.set()
    await asyncio.wait_for(task, 15)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    """The fake microphone: espeak-ng saying a request, or a tone if espeak-ng is missing."""
    path = tmp_path_factory.mktemp("audio") / "caller.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(
            ["espeak-ng", "-s", "150", "-w", str(path), "What is on my to do list today?"],
            check=True,
        )
    else:
        rate = 16000
        samples = (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(rate * 2))
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
    return path


@pytest.fixture(scope="module")
async def browser(speech_wav: Path) -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run `apt-get update && apt-get install -y chromium`")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech_wav}",
            ],
        )
        yield launched
        await launched.close()


async def _refuse(route: WebSocketRoute) -> None:
    await route.close(code=1011, reason="no network in tests")


@pytest.fixture
async def page(browser: Browser, server: Served) -> AsyncIterator[Page]:
    context = await browser.new_context(
        base_url=server.url, viewport={"width": 1024, "height": 800}
    )
    # Nothing leaves this machine: the Voice SDK's sound files and Twilio signalling are
    # refused here, and tests that need Twilio's side stand in for it with page routes.
    await context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda r: r.abort())
    await context.route_web_socket(re.compile(r"^wss?://(?!127\.0\.0\.1[:/])"), _refuse)
    opened = await context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def console(message: Any) -> None:
        # Chrome logs every 4xx fetch; the page expects 401 (signed out) and wrong PINs.
        if message.type == "error" and "status of 401" not in message.text:
            problems.append(f"console {message.type}: {message.text}")

    opened.on("console", console)
    opened.problems = problems  # type: ignore[attr-defined]
    yield opened
    await context.close()


async def sign_in(page: Page, account: str, pin: str) -> None:
    await page.get_by_label("Account number").fill(account)
    await page.get_by_label("PIN", exact=True).fill(pin)
    await page.get_by_role("button", name="Sign in").click()


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


# The page ---------------------------------------------------------------------------------------


async def test_sign_in_and_call_controls(page: Page, tenant: Tenant) -> None:
    caller = tenant.member
    response = await page.goto("/")
    assert response is not None and response.ok
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp

    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await sign_in(page, caller.account_number, "0000")
    await expect(page.get_by_role("alert")).to_have_text(
        "That account number and PIN do not match."
    )
    await expect(page.get_by_label("PIN", exact=True)).to_be_focused()
    await expect(page.get_by_label("PIN", exact=True)).to_have_value("")

    # Keyboard only: type, tab, type, Enter.
    await page.get_by_label("Account number").fill("")
    await page.get_by_label("Account number").press_sequentially(caller.account_number)
    await page.keyboard.press("Tab")
    await page.keyboard.type(caller.pin)
    await page.keyboard.press("Enter")

    await expect(page.get_by_text("Signed in as Max Member")).to_be_visible()
    call = page.get_by_role("button", name="Call the assistant")
    await expect(call).to_be_enabled()  # the vendored SDK loaded
    await expect(call).to_be_focused()
    assert await page.evaluate("typeof window.Twilio.Device") == "function"
    await expect(page.get_by_role("button", name="Call (local mode)")).to_be_enabled()
    await expect(page.get_by_role("button", name="Hang up")).to_be_disabled()
    await expect(page.get_by_role("status")).to_have_text("Ready to call.")
    await expect(page.get_by_role("log")).to_be_attached()
    await page.screenshot(path=shot("caller-page.png"), full_page=True)

    # Usable on a phone screen: nothing wider than the viewport.
    await page.set_viewport_size({"width": 375, "height": 740})
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path=shot("caller-page-phone.png"), full_page=True)

    # A reload keeps the session; signing out ends it.
    await page.reload()
    await expect(page.get_by_text("Signed in as Max Member")).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.problems == [], page.problems  # type: ignore[attr-defined]


# The audio code, checked in the browser against references --------------------------------------


async def test_mulaw_codec_is_bit_exact(page: Page) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the reference G.711 (Python < 3.13; audioop-lts later)
    await page.goto("/")
    encoded, decoded = await page.evaluate(
        """async () => {
            const m = await import('/web/mulaw.js');
            const enc = [];
            for (let s = -32768; s < 32768; s++) enc.push(m.encodeMulaw16(s));
            const dec = [];
            for (let u = 0; u < 256; u++) dec.push(m.decodeMulaw16(u));
            return [enc, dec];
        }"""
    )
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in range(-32768, 32768))
    assert bytes(encoded) == audioop.lin2ulaw(pcm, 2)
    reference = audioop.ulaw2lin(bytes(range(256)), 2)
    assert decoded == [
        int.from_bytes(reference[i : i + 2], "little", signed=True) for i in range(0, 512, 2)
    ]


def mulaw_to_linear(data: bytes) -> list[int]:
    out = []
    for byte in data:
        u = ~byte & 0xFF
        t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        out.append(0x84 - t if u & 0x80 else t - 0x84)
    return out


def tone_power(samples: list[int], frequency: float, rate: int = 8000) -> float:
    """Goertzel: power of one frequency, normalised by length."""
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / len(samples)


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(x * x for x in samples) / max(1, len(samples)))


@pytest.mark.parametrize("rate", [48000, 44100])
async def test_mic_worklet_low_passes_and_decimates_to_8khz(page: Page, rate: int) -> None:
    await page.goto("/")
    frames_by_tone = await page.evaluate(
        """async (rate) => {
            const result = {};
            for (const frequency of [440, 1000, 6000]) {
                const ctx = new OfflineAudioContext(1, rate, rate);  // one second
                await ctx.audioWorklet.addModule('/web/mic-worklet.js');
                const node = new AudioWorkletNode(ctx, 'mulaw-encoder', { numberOfOutputs: 0 });
                const frames = [];
                node.port.onmessage = ({ data }) => frames.push(Array.from(data));
                const osc = new OscillatorNode(ctx, { frequency });
                const gain = new GainNode(ctx, { gain: 0.5 });
                osc.connect(gain).connect(node);
                osc.start();
                await ctx.startRendering();
                await new Promise((resolve) => setTimeout(resolve, 200));
                result[frequency] = frames;
            }
            return result;
        }""",
        rate,
    )
    for frequency, frames in frames_by_tone.items():
        assert all(len(f) == 160 for f in frames), frequency
        assert 47 <= len(frames) <= 50, (frequency, len(frames))  # 20 ms frames, less filter delay
    signal = {
        int(f): mulaw_to_linear(bytes(b for frame in frames for b in frame))
        for f, frames in frames_by_tone.items()
    }
    for frequency in (440, 1000):
        samples = signal[frequency][400:]  # past the filter's start-up
        assert 0.5 * 32768 * 0.6 < rms(samples) * math.sqrt(2) < 0.5 * 32768 * 1.1
        # The tone is where it should be at 8 kHz (a wrong ratio would move it).
        assert tone_power(samples, frequency) > 20 * tone_power(samples, frequency * 1.25)
    # 6 kHz is above the 4 kHz Nyquist limit: without the low-pass it would alias to 2 kHz.
    assert rms(signal[6000][400:]) < 0.03 * rms(signal[440][400:])


# Calling through Twilio (Voice SDK), with Twilio's signalling stood in for ----------------------


class FakeSignalling:
    """Twilio's signalling WebSocket as far as the SDK's first message: it records and stays
    silent, so the call stays in "Connecting…"."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle(self, route: WebSocketRoute) -> None:
        route.on_message(lambda message: self.messages.append(json.loads(message)))


async def test_twilio_call_uses_the_users_token_and_can_be_cancelled(
    page: Page, tenant: Tenant
) -> None:
    signalling = FakeSignalling()
    await page.route_web_socket(re.compile(r"^wss://[^/]*twilio\.com/"), signalling.handle)
    caller = tenant.member
    await page.goto("/")
    await sign_in(page, caller.account_number, caller.pin)
    await page.get_by_role("button", name="Call the assistant").click()
    await expect(page.get_by_role("status")).to_have_text("Connecting…")
    for _ in range(200):
        if signalling.messages:
            break
        await asyncio.sleep(0.05)
    token = signalling.messages[0]["payload"]["token"]
    claims = jwt.decode(token, API_KEY_SECRET, algorithms=["HS256"])
    assert claims["grants"]["identity"] == caller.identity

    hang_up = page.get_by_role("button", name="Hang up")
    await expect(hang_up).to_be_enabled()
    await page.keyboard.press("Escape")  # the shortcut the button advertises
    await expect(page.get_by_role("status")).to_have_text("Call cancelled.")
    await expect(hang_up).to_be_disabled()
    await expect(page.get_by_role("button", name="Call the assistant")).to_be_enabled()


async def test_twilio_unreachable_is_reported(page: Page, tenant: Tenant) -> None:
    caller = tenant.member
    await page.goto("/")
    await sign_in(page, caller.account_number, caller.pin)
    await page.get_by_role("button", name="Call the assistant").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Call failed: could not reach Twilio. Check your connection.", timeout=25_000
    )
    await expect(page.get_by_role("button", name="Hang up")).to_be_disabled()
    await expect(page.get_by_role("button", name="Call the assistant")).to_be_enabled()


# Local mode against a stand-in stream server -----------------------------------------------------


class FakeStreamServer:
    """Plays Twilio's side of a Media Stream inside the browser (Playwright's WebSocket routing),
    recording what the page sends."""

    def __init__(self) -> None:
        self.route: WebSocketRoute | None = None
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.connected = asyncio.Event()

    async def handle(self, route: WebSocketRoute) -> None:
        self.route = route
        route.on_message(self._received)
        self.connected.set()

    def _received(self, message: str | bytes) -> None:
        self.messages.append((time.monotonic(), json.loads(message)))

    def send(self, event: str, **body: Any) -> None:
        assert self.route is not None
        self.route.send(json.dumps({"event": event, "streamSid": "MZfake", **body}))

    def of(self, event: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, m) for at, m in self.messages if m["event"] == event]

    async def wait_for(self, event: str, predicate=lambda m: True, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, message in self.of(event):
                if predicate(message):
                    return at, message
            await asyncio.sleep(0.01)
        raise AssertionError(
            f"no {event} message within {timeout}s: {[m for _, m in self.messages][-3:]}"
        )

    def media_since(self, since: float) -> list[bytes]:
        return [
            base64.b64decode(m["media"]["payload"]) for at, m in self.of("media") if at >= since
        ]


def tone_payload(seconds: float, frequency: float = 440.0) -> str:
    """μ-law of a tone (the reference encoder), as a Media Streams payload."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    samples = (
        int(6000 * math.sin(2 * math.pi * frequency * i / 8000)) for i in range(int(8000 * seconds))
    )
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    return base64.b64encode(audioop.lin2ulaw(pcm, 2)).decode()


async def wait_for_subscriber(state: StateStore, channel: str) -> None:
    for _ in range(200):
        if dict(await state.redis.pubsub_numsub(channel)).get(channel, 0):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the page never subscribed to the transcript")


async def test_local_mode_speaks_media_streams(
    page: Page, tenant: Tenant, state: StateStore
) -> None:
    fake = FakeStreamServer()
    await page.route_web_socket(re.compile(r".*/streams/local$"), fake.handle)
    caller = tenant.member
    await page.goto("/")
    await sign_in(page, caller.account_number, caller.pin)
    await page.get_by_role("button", name="Call (local mode)").click()
    await asyncio.wait_for(fake.connected.wait(), 10)

    # connected, then start carrying the session token and call SID, then media.
    _, start = await fake.wait_for("start")
    assert fake.messages[0][1] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    body = start["start"]
    call_sid = body["callSid"]
    assert re.fullmatch(r"LC[0-9a-f]{32}", call_sid)
    assert start["sequenceNumber"] == "1" and start["streamSid"] == body["streamSid"]
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    session = await state.get_session(body["customParameters"]["session"], kind="call")
    assert session is not None and session.call_sid == call_sid
    assert session.subject_id == str(caller.user_id)
    await expect(page.get_by_role("status")).to_have_text("Connected.")

    # Real-time 20 ms frames of 160 μ-law bytes, numbered like Twilio's.
    began = time.monotonic()
    await asyncio.sleep(2.0)
    window = [m for at, m in fake.of("media") if began <= at < began + 2.0]
    assert 70 <= len(window) <= 130, len(window)  # ~100 at 50 frames a second
    media = [m for _, m in fake.of("media")]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
    chunks = [int(m["media"]["chunk"]) for m in media]
    assert chunks == list(range(1, len(chunks) + 1))
    assert all(int(m["media"]["timestamp"]) == (int(m["media"]["chunk"]) - 1) * 20 for m in media)
    sequence = [int(m["sequenceNumber"]) for _, m in fake.messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1))
    heard = mulaw_to_linear(b"".join(fake.media_since(began)))
    assert rms(heard) > 100, "the fake microphone's speech never arrived"

    # Mute sends silence; unmute sends sound again.
    mute = page.get_by_role("button", name="Mute")
    await mute.click()
    await expect(page.get_by_role("button", name="Unmute")).to_have_attribute(
        "aria-pressed", "true"
    )
    await asyncio.sleep(0.3)
    muted_from = time.monotonic()
    await asyncio.sleep(1.0)
    assert set(b"".join(fake.media_since(muted_from))) == {0xFF}
    await page.get_by_role("button", name="Unmute").click()
    await expect(page.get_by_role("button", name="Mute")).to_have_attribute("aria-pressed", "false")

    # A mark comes back once the audio queued before it has played...
    sent = time.monotonic()
    for _ in range(3):
        fake.send("media", media={"payload": tone_payload(0.25)})
    fake.send("mark", mark={"name": "after-tone"})
    echoed, _ = await fake.wait_for("mark", lambda m: m["mark"]["name"] == "after-tone")
    assert 0.6 <= echoed - sent <= 2.5, echoed - sent
    # ...at once when nothing is queued...
    sent = time.monotonic()
    fake.send("mark", mark={"name": "nothing-queued"})
    echoed, _ = await fake.wait_for("mark", lambda m: m["mark"]["name"] == "nothing-queued")
    assert echoed - sent < 0.3
    # ...and `clear` drops queued audio and returns its pending marks straight away.
    fake.send("media", media={"payload": tone_payload(4.0)})
    fake.send("mark", mark={"name": "cleared"})
    await asyncio.sleep(0.2)
    sent = time.monotonic()
    fake.send("clear")
    echoed, _ = await fake.wait_for("mark", lambda m: m["mark"]["name"] == "cleared")
    assert echoed - sent < 0.5, echoed - sent

    # The transcript arrives over the server's socket, from Redis pub/sub.
    channel = keys.transcript_channel(call_sid)
    await wait_for_subscriber(state, channel)
    await state.publish(channel, {"speaker": "caller", "text": "what is on", "final": False})
    await expect(page.locator("#interim")).to_have_text("You: what is on")
    await state.publish(
        channel, {"speaker": "caller", "text": "What is on my list?", "final": True}
    )
    await state.publish(
        channel, {"speaker": "assistant", "text": "You have two todos.", "final": True}
    )
    log = page.get_by_role("log")
    await expect(log.get_by_role("listitem")).to_have_text(
        ["You: What is on my list?", "Assistant: You have two todos."]
    )
    await expect(page.locator("#interim")).to_have_text("")
    await page.screenshot(path=shot("caller-page-local-call.png"), full_page=True)

    # Hang up: the page says stop and goes back to ready.
    await page.get_by_role("button", name="Hang up").click()
    _, stop = await fake.wait_for("stop")
    assert stop["stop"]["callSid"] == call_sid
    await expect(page.get_by_role("status")).to_have_text("Call ended.")
    await expect(page.get_by_role("button", name="Hang up")).to_be_disabled()
    await expect(page.get_by_role("button", name="Call (local mode)")).to_be_enabled()
    assert page.problems == [], page.problems  # type: ignore[attr-defined]


# Local mode end to end, against the call engine's real /streams/local ---------------------------


async def test_local_mode_call_end_to_end(page: Page, tenant: Tenant) -> None:
    caller = tenant.member
    await page.goto("/")
    await sign_in(page, caller.account_number, caller.pin)
    await page.get_by_role("button", name="Call (local mode)").click()
    await expect(page.get_by_role("status")).to_have_text("Connected.", timeout=15_000)
    # The assistant greets the caller and hears the fake microphone's question.
    log = page.get_by_role("log")
    await expect(log.get_by_role("listitem").filter(has_text="Assistant:").first).to_be_visible(
        timeout=30_000
    )
    await expect(log.get_by_role("listitem").filter(has_text="You:").first).to_be_visible(
        timeout=30_000
    )
    await page.screenshot(path=shot("caller-page-local-call-e2e.png"), full_page=True)
    await page.get_by_role("button", name="Hang up").click()
    await expect(page.get_by_role("status")).to_have_text("Call ended.")
