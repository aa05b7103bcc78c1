"""The agent console end to end: the real page, served by our app, registered to a Kamailio PBX
stand-in over WS and WSS, ringing with a call whose X- headers come from the TwiML that the real
TransferService sent to the Twilio REST stand-in. sipp plays the Twilio -> PBX leg."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

import pytest

from tests.e2e.conftest import ARTIFACTS, HERE, HOST, ConsolePage, Live, Pbx, free_port
from voice_app.agent.base import CallContext
from voice_app.db import calls
from voice_app.transfer.service import transfer_service

pytestmark = pytest.mark.sip


def sdp_directions(console: ConsolePage, originator: str, sdp_type: str) -> list[str]:
    return [
        e["direction"]
        for e in console.events("sdp")
        if e["originator"] == originator and e["sdpType"] == sdp_type
    ]


async def _start_transfer(live: Live, call_sid: str) -> str:
    """What the call engine does once its transfer line has played; returns the TwiML sent."""
    import asyncpg

    conn = await asyncpg.connect(live.database_url)
    try:
        for role, text in (
            ("user", "I was charged twice in March."),
            ("assistant", "I can see two payments. Shall I get a colleague?"),
            ("user", "Yes please, a person."),
        ):
            await calls.add_message(conn, live.tenant_id, call_sid, role, text)
    finally:
        await conn.close()
    call = CallContext(
        tenant_id=str(live.tenant_id),
        user_id=str(live.caller_id),
        call_sid=call_sid,
        display_name="Ada Lovelace",
        caller_number=live.caller_phone,
    )
    result = await transfer_service(live.app.extensions["services"]).start(
        call, "disputes a double charge"
    )
    assert result.status == "dialing", result
    ((_, form),) = [u for u in live.twilio.updates if u[0] == call_sid]
    return form["Twiml"]


def sip_headers_of(twiml: str) -> dict[str, str]:
    """The X- headers Twilio will put on its INVITE, from the <Sip> URI's query."""
    uri = ElementTree.fromstring(twiml).find("./Dial/Sip")  # noqa: S314 - our own TwiML
    assert uri is not None and uri.text
    assert re.match(rf"sip:2001@{re.escape(HOST)};transport=tls\?", uri.text)
    query = uri.text.split("?", 1)[1]
    return {k: unquote(v) for k, v in (pair.split("=", 1) for pair in query.split("&"))}


def run_sipp(sipp: str, pbx: Pbx, headers: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    logs.mkdir(parents=True, exist_ok=True)
    udp = (socket.SOCK_DGRAM,)
    cmd = [
        sipp, f"{HOST}:{pbx.sip_port}", "-sf", str(HERE / "pbx_call_agent.xml"),
        "-s", "2001", "-i", HOST, "-p", str(free_port(udp)), "-mp", str(free_port(udp)),
        "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error",
        "-key", "callerid", headers["X-Caller-Id"],
        "-key", "context", headers["X-Call-Context"],
        "-trace_msg", "-message_file", str(logs / "messages.log"),
        "-trace_err", "-error_file", str(logs / "errors.log"),
        "-trace_logs", "-log_file", str(logs / "scenario.log"),
    ]
    with open(logs / "stdout.log", "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("transport", ["wss", "ws"])
def test_a_transferred_call_rings_the_console(
    console: ConsolePage, live: Live, kamailio: Pbx, sipp: str, transport: str
) -> None:
    if transport not in kamailio.urls:
        pytest.skip("wss needs kamailio-tls-modules and openssl")
    page = console.page
    console.sign_in()
    assert console.text("#who") == "Erin Agent · Example Ltd"
    console.connect(kamailio.urls[transport])
    registered = console.wait("registered")
    assert registered["status"] == 200
    assert console.events("ws-connected")[0]["url"].startswith(f"{transport}://")
    assert console.text("#reg") == "Registered as 2001, ready for calls"
    console.wait("events-open")

    # The call engine starts the transfer: card pushed, REST update to the stand-in.
    call_sid = "CA" + uuid.uuid4().hex
    twiml = live.loop.run(_start_transfer(live, call_sid))
    headers = sip_headers_of(twiml)
    assert headers["X-Caller-Id"] == "+15005550001" and len(headers["X-Call-Context"]) > 20
    pushed = console.wait("card-pushed")
    assert pushed["token"] == headers["X-Call-Context"] and pushed["name"] == "Ada Lovelace"
    assert "Transfer on its way: Ada Lovelace" in console.text("#prealert")

    # Twilio dials the PBX, the PBX rings 2001 with the same headers (played by sipp).
    logs = ARTIFACTS / f"sipp-{transport}"
    proc = run_sipp(sipp, kamailio, headers, logs)
    try:
        incoming = console.wait("incoming")
        assert incoming["context"] == headers["X-Call-Context"]
        assert incoming["callerId"] == "+15005550001"
        kinds = [e["type"] for e in console.events()]
        assert kinds.index("card-pushed") < kinds.index("incoming")  # on screen before it rang

        fetched = console.wait("card-fetched")  # GET /api/console/context/{token}, same card
        assert fetched["name"] == "Ada Lovelace"
        assert console.text("#call-state") == "Incoming call from Ada Lovelace"
        assert console.text("#card-name") == "Ada Lovelace"
        assert console.text("#card-phone") == "+15005550001"
        assert console.text("#card-tenant") == "Example Ltd"
        assert console.text("#card-reason") == "disputes a double charge"
        assert "charged twice in March" in console.text("#card-conversation")
        assert "Dispute the March invoice" in console.text("#card-todos")
        assert page.evaluate("document.activeElement.id") == "answer"  # keyboard-first
        page.screenshot(path=str(ARTIFACTS / f"agent-console-ringing-{transport}.png"))

        page.keyboard.press("Enter")  # answer from the keyboard (focus is on Answer)
        console.wait("confirmed")
        assert console.text("#call-state") == "In call with Ada Lovelace"

        page.click("#hold")
        console.wait("hold-ok")
        assert sdp_directions(console, "local", "offer")[-1] == "sendonly"
        assert sdp_directions(console, "remote", "answer")[-1] == "recvonly"
        assert page.get_attribute("#hold", "aria-pressed") == "true"
        assert console.text("#hold") == "Resume"

        page.click("#hold")
        console.wait("unhold-ok")
        assert sdp_directions(console, "local", "offer")[-1] == "sendrecv"
        assert sdp_directions(console, "remote", "answer")[-1] == "sendrecv"
        assert page.get_attribute("#hold", "aria-pressed") == "false"

        page.click("#mute")
        console.wait("muted")
        assert page.get_attribute("#mute", "aria-pressed") == "true"
        page.click("#mute")
        console.wait("unmuted")

        page.fill("#transfer-target", "3001")
        page.click("#transfer")
        console.wait("transfer-ok")  # REFER -> 202 -> NOTIFY "SIP/2.0 200 OK"
        assert "Transferred to 3001" in console.text("#call-state")

        page.click("#hangup")
        ended = console.wait("ended")
        assert ended["originator"] == "local"
        assert proc.wait(timeout=15) == 0, f"sipp failed, see {logs}"
        log = console.text("#call-log")
        assert "Ada Lovelace · transferred" in log and "disputes a double charge" in log
    except Exception as error:
        notes = [p.read_text()[-1500:] for p in (logs / "scenario.log", logs / "errors.log")
                 if p.exists()]
        raise AssertionError(f"{error}\n--- sipp says ---\n" + "\n".join(notes)) from error
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_wrong_sip_password_shows_an_error(console: ConsolePage, kamailio: Pbx) -> None:
    console.sign_in()
    console.connect(kamailio.urls["ws"], password="not-the-password")
    failed = console.wait("registration-failed", stop_on=("registered",))
    assert failed["cause"] == "Authentication Error"
    assert console.text("#reg") == "Registration failed: wrong extension or SIP password"
    assert console.page.get_attribute("#reg-dot", "class") == "dot failed"
    assert console.page.evaluate("document.activeElement.id") == "sip-password"


def test_settings_stay_in_memory_unless_remembered(console: ConsolePage, kamailio: Pbx) -> None:
    page = console.page
    console.sign_in()
    console.connect(kamailio.urls["ws"])
    console.wait("registered")
    assert page.evaluate("localStorage.getItem('agentConsole.sip')") is None
    page.click("#disconnect")
    assert console.text("#reg") == "Not connected"
    page.check("#sip-remember")
    page.click("#connect")
    console.wait("registered")
    saved: dict[str, Any] = page.evaluate("JSON.parse(localStorage.getItem('agentConsole.sip'))")
    assert saved["extension"] == "2001" and saved["wss"] == kamailio.urls["ws"]
    page.uncheck("#sip-remember")
    assert page.evaluate("localStorage.getItem('agentConsole.sip')") is None


MEDIA_STATS = """async () => {
  const pc = window.agentConsole.session && window.agentConsole.session.connection;
  if (!pc) return null;
  let rx = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') rx += r.packetsReceived;
  });
  const audio = document.getElementById('remote-audio');
  const tracks = audio.srcObject ? audio.srcObject.getAudioTracks() : [];
  return { rx, ice: pc.iceConnectionState,
           directions: pc.getTransceivers().map((t) => t.currentDirection),
           playing: !audio.paused && tracks.some((t) => t.readyState === 'live') };
}"""


def wait_until(check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_remote_audio_plays_and_stops_while_held(
    console: ConsolePage, caller_page: Any, live: Live, kamailio: Pbx
) -> None:
    """A second JsSIP UA as the caller: real WebRTC (ICE, DTLS-SRTP) between two browsers."""
    page = console.page
    console.sign_in()
    console.connect(kamailio.urls["ws"])
    console.wait("registered")
    headers = sip_headers_of(live.loop.run(_start_transfer(live, "CA" + uuid.uuid4().hex)))
    caller_page.evaluate(
        "([target, headers]) => caller.call(target, headers)",
        [f"sip:2001@{HOST}", [f"{name}: {value}" for name, value in headers.items()]],
    )
    console.wait("incoming")
    console.wait("card-fetched")
    page.bring_to_front()
    page.click("#answer")
    console.wait("confirmed")

    def stats() -> dict[str, Any]:
        return page.evaluate(MEDIA_STATS) or {}

    wait_until(lambda: stats().get("rx", 0) > 25 and stats()["playing"], what="caller audio")
    assert stats()["ice"] in ("connected", "completed")

    page.click("#hold")
    console.wait("hold-ok")
    wait_until(lambda: stats().get("directions") == ["sendonly"], what="sendonly")
    time.sleep(0.3)  # packets in flight
    before = stats()["rx"]
    time.sleep(1.0)
    assert stats()["rx"] - before <= 2, "audio still arriving while the caller is held"

    page.click("#hold")
    console.wait("unhold-ok")
    before = stats()["rx"]
    wait_until(lambda: stats()["rx"] > before + 25, what="audio after resume")
    assert stats()["directions"] == ["sendrecv"]

    page.click("#hangup")
    console.wait("ended")
    caller_page.wait_for_function(
        "caller.events.some(e => e.type === 'ended' && e.originator === 'remote')",
        timeout=10_000, polling=50,
    )
