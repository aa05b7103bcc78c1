"""Fixtures for the agent-console end-to-end tests (the recipe of the shared SIP-E2E.md recipe).

Everything listens on 127.0.0.1, on free ports:
- our app (create_app, served by hypercorn) with the real console API and the built page, its
  Twilio REST calls going to the local stand-in, on real PostgreSQL and Redis;
- Kamailio standing in for FusionPBX: registrar/proxy with SIP over UDP/TCP, WS and WSS;
- sipp playing the Twilio -> PBX leg of a transferred call;
- Debian's Chromium driven by Python Playwright (`executable_path`, never `playwright install`).

Unlike the recipe these run in the host network namespace: the app needs the host's PostgreSQL
and Redis. sipp offers no ICE candidates, so no media is attempted and nothing leaves loopback.
Tests skip, saying why, when kamailio, sipp or chromium are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = ROOT / "test-artifacts"
HOST = "127.0.0.1"
SIP_PASSWORD = "e2e-sip-secret"
AGENT_EMAIL = "agent@e2e.example"
AGENT_PASSWORD = "e2e-agent-password"
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
T = TypeVar("T")


def tool(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    for directory in extra_dirs:
        found = found or shutil.which(name, path=directory)
    return found


KAMAILIO = tool("kamailio", "/usr/sbin")
SIPP = tool("sipp")
HAVE_CHROMIUM = Path(CHROMIUM).exists()
HAVE_TLS_MODULE = any(Path("/usr/lib").glob("*/kamailio/modules/tls.so"))


def require(tool_path: str | None, what: str) -> None:
    if not tool_path:
        pytest.skip(f"{what} not installed (scripts/bootstrap WITH_DEV=1 installs it)")


def free_port(kinds: tuple[int, ...] = (socket.SOCK_STREAM,)) -> int:
    """A port free for every socket kind given (SIP wants the same number on UDP and TCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kinds[0]) as first:
            first.bind((HOST, 0))
            port = first.getsockname()[1]
            try:
                for kind in kinds[1:]:
                    with socket.socket(socket.AF_INET, kind) as other:
                        other.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port}")


# --- an event loop in a thread: the app server, the Twilio stand-in, seeding ---------------------


class Loop:
    """Runs coroutines on one background event loop, from synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclasses.dataclass
class Live:
    """The running app and what the tests need to drive it."""

    loop: Loop
    base_url: str
    app: Any
    twilio: Any
    database_url: str
    tenant_id: uuid.UUID
    caller_id: uuid.UUID
    caller_phone: str


async def _seed(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    from voice_app.auth.secrets import hash_secret
    from voice_app.db import users

    conn = await asyncpg.connect(database_url)
    try:
        tenant_id = await users.create_tenant(conn, f"e2e-{uuid.uuid4().hex[:8]}", "Example Ltd")
        await conn.execute(
            "INSERT INTO agents (tenant_id, email, display_name, password_hash) "
            "VALUES ($1, $2, 'Erin Agent', $3) ON CONFLICT (email) DO UPDATE SET "
            "tenant_id = EXCLUDED.tenant_id, password_hash = EXCLUDED.password_hash",
            tenant_id, AGENT_EMAIL, hash_secret(AGENT_PASSWORD),
        )
        caller = await users.create_user(
            conn, tenant_id, account_number=str(uuid.uuid4().int)[:9],
            display_name="Ada Lovelace", pin_hash="x", phone_e164="+15005550001",
        )
        await conn.execute(
            "INSERT INTO todos (tenant_id, owner_id, title, priority) VALUES ($1, $2, $3, 'high')",
            tenant_id, caller.id, "Dispute the March invoice",
        )
        return tenant_id, caller.id
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def console_bundle() -> Path:
    """The page as agent_console/build.sh makes it, rebuilt when a source is newer."""
    bundle = ROOT / "voice_app" / "console" / "static" / "console.js"
    sources = list((ROOT / "agent_console" / "src").iterdir())
    if not bundle.exists() or any(s.stat().st_mtime > bundle.stat().st_mtime for s in sources):
        subprocess.run([str(ROOT / "agent_console" / "build.sh")], check=True)
    return bundle


@pytest.fixture(scope="package")
def live(database_url: str, redis_url: str, console_bundle: Path) -> Iterator[Live]:
    """Our app on hypercorn (127.0.0.1, a free port), Twilio REST going to the stand-in."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from tests.standins.twilio_rest import TwilioRestStandIn
    from voice_app.app import create_app
    from voice_app.config import Settings

    loop = Loop()
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    twilio = loop.run(
        TwilioRestStandIn(account_sid=TWILIO_ACCOUNT_SID, auth_token=TWILIO_AUTH_TOKEN).start()
    )
    settings = Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ENVIRONMENT": "test",
            "PUBLIC_BASE_URL": base_url,
            "SECRET_KEY": "e2e-secret",
            "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
            "TWILIO_API_BASE_URL": twilio.url,
            "PBX_SIP_DOMAIN": HOST,
            "AGENT_EXTENSION": "2001",
        },
        dotenv=None,
    )
    app = create_app(settings)
    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()

    server = asyncio.run_coroutine_threadsafe(
        serve(app, config, shutdown_trigger=shutdown_trigger), loop.loop  # type: ignore[arg-type]
    )
    deadline = time.monotonic() + 20
    while not server.done():
        with contextlib.suppress(TimeoutError):
            wait_port(port, timeout=0.2)
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the app did not start listening on {base_url}")
    if server.done():  # it stopped before it served: say why
        server.result()
        raise RuntimeError("the app stopped at start-up")
    tenant_id, caller_id = loop.run(_seed(database_url))
    yield Live(loop, base_url, app, twilio, database_url, tenant_id, caller_id, "+15005550001")
    loop.loop.call_soon_threadsafe(stop.set)
    with contextlib.suppress(Exception):
        server.result(10)
    loop.run(twilio.stop())
    loop.close()


# --- Kamailio, the PBX stand-in ------------------------------------------------------------------


@dataclasses.dataclass
class Pbx:
    sip_port: int
    urls: dict[str, str]  # transport -> WebSocket URL
    log: Path


@pytest.fixture(scope="package")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    require(KAMAILIO, "kamailio (with kamailio-websocket-modules)")
    assert KAMAILIO
    ARTIFACTS.mkdir(exist_ok=True)
    rundir = tmp_path_factory.mktemp("kamailio")
    sip_port = free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
    ws_port, wss_port = free_port(), free_port()
    cmd = [
        KAMAILIO, "-f", str(HERE / "kamailio.cfg"), "-DD", "-E", "-Y", str(rundir),
        "-m", "64", "-M", "8",
        "-A", f"SIP_PORT={sip_port}", "-A", f"WS_PORT={ws_port}", "-A", f"WSS_PORT={wss_port}",
        "-A", f'TEST_PASSWORD="{SIP_PASSWORD}"',
    ]
    wss = HAVE_TLS_MODULE and shutil.which("openssl") is not None
    if wss:  # a throw-away self-signed certificate for 127.0.0.1
        cert, key = rundir / "cert.pem", rundir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        tls_cfg = rundir / "tls.cfg"
        tls_cfg.write_text(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            f"require_certificate = no\ncertificate = {cert}\nprivate_key = {key}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            "require_certificate = no\n"
        )
        cmd += ["-A", "WITH_WSS", "-A", f'TLS_CFG="{tls_cfg}"']
    log_path = ARTIFACTS / "kamailio.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(ws_port)
        if wss:
            wait_port(wss_port)
    except TimeoutError:
        proc.kill()
        raise
    urls = {"ws": f"ws://{HOST}:{ws_port}"}
    if wss:
        urls["wss"] = f"wss://{HOST}:{wss_port}"
    yield Pbx(sip_port, urls, log_path)
    proc.send_signal(signal.SIGTERM)  # the main process stops its children
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def sipp() -> str:
    require(SIPP, "sipp (Debian package sip-tester)")
    assert SIPP
    return SIPP


# --- Chromium ------------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    # Package scope, and set up after the async fixtures: Playwright's sync API keeps an event
    # loop running in this thread, which the async tests outside this package must not meet.
    if not HAVE_CHROMIUM:
        pytest.skip(f"chromium not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


class ConsolePage:
    """The real agent console page, and its diagnostics list `window.agentConsole.events`."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"PAGEERROR {e}"))

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.page.evaluate("window.agentConsole.events")
        return [e for e in found if type_ is None or e["type"] == type_]

    def wait(
        self,
        type_: str,
        timeout: float = 10_000,
        stop_on: tuple[str, ...] = ("failed", "ended", "registration-failed"),
    ) -> dict[str, Any]:
        """The latest event of `type_`; fail fast when a terminal event comes instead."""
        result: dict[str, Any] = self.page.wait_for_function(
            """([t, stop]) => {
                 const ev = window.agentConsole && window.agentConsole.events;
                 if (!ev) return false;
                 const hit = ev.filter(e => e.type === t);
                 if (hit.length) return hit[hit.length - 1];
                 const bad = ev.find(e => stop.includes(e.type));
                 return bad ? {type: '__unexpected__', bad: bad} : false;
               }""",
            arg=[type_, [s for s in stop_on if s != type_]],
            timeout=timeout,
            polling=50,  # not rAF: background tabs get few frames (SIP-E2E.md 6.6)
        ).json_value()
        assert result["type"] != "__unexpected__", f"wanted {type_!r}, got {result['bad']}"
        return result

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def sign_in(self) -> None:
        self.page.fill("#email", AGENT_EMAIL)
        self.page.fill("#password", AGENT_PASSWORD)
        self.page.click("#signin-button")
        self.wait("signed-in")

    def connect(self, ws_url: str, password: str = SIP_PASSWORD) -> None:
        self.page.fill("#sip-wss", ws_url)
        self.page.fill("#sip-domain", HOST)
        self.page.fill("#sip-extension", "2001")
        self.page.fill("#sip-password", password)
        self.page.click("#connect")

    def dump(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            (ARTIFACTS / f"{name}.json").write_text(
                json.dumps({"events": self.events(), "console": self.console}, indent=1)
            )


@pytest.fixture
def console(live: Live, browser: Any, request: pytest.FixtureRequest) -> Iterator[ConsolePage]:
    context = browser.new_context(ignore_https_errors=True)  # own cookies and storage per test
    page = context.new_page()
    console_page = ConsolePage(page)
    page.goto(f"{live.base_url}/console/")
    page.wait_for_selector("#signin:not([hidden])")
    yield console_page
    console_page.dump(f"e2e-{request.node.name}")
    with contextlib.suppress(Exception):
        # un-REGISTER, so the next test starts with an empty location table
        page.evaluate("window.agentConsole.ua && window.agentConsole.ua.unregister()")
        page.wait_for_function(
            "!window.agentConsole.ua || !window.agentConsole.ua.isRegistered()",
            timeout=2000, polling=50,
        )
    context.close()


@pytest.fixture(scope="package")
def caller_site(tmp_path_factory: pytest.TempPathFactory, console_bundle: Path) -> Iterator[str]:
    """The test caller page and JsSIP (same pinned npm package) on a loopback HTTP server: a
    page that did not come from a loopback address may not open sockets to one (Chromium's
    local network access checks), so it is served for real rather than through routing."""
    import http.server
    import socketserver

    site = tmp_path_factory.mktemp("caller-site")
    shutil.copy(HERE / "caller.html", site / "caller.html")
    entry = site / "entry.cjs"
    entry.write_text("module.exports = require('jssip');\n")
    modules = ROOT / "agent_console" / "node_modules"
    subprocess.run(
        [str(modules / ".bin" / "esbuild"), str(entry), "--bundle", "--format=iife",
         "--global-name=JsSIP", "--platform=browser", f"--outfile={site / 'jssip.js'}",
         "--log-level=warning"],
        check=True, env={**os.environ, "NODE_PATH": str(modules)},
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server((HOST, 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def caller_page(caller_site: str, browser: Any, kamailio: Pbx) -> Iterator[Any]:
    """A second JsSIP UA in its own browser context: real WebRTC to the console."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{caller_site}/caller.html?ws={kamailio.urls['ws']}")
    page.wait_for_function(
        "window.caller && window.caller.events.some(e => e.type === 'ws-connected')",
        timeout=10_000, polling=50,
    )
    yield page
    context.close()
