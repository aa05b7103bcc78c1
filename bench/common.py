"""What every benchmark shares: scratch PostgreSQL and Redis, the app and the stand-ins as pinned
child processes (stopped by PID, also on Ctrl-C), the caller's script, and resource sampling.

Process layout on a 2-core host: the app alone on core 0; the driver (the caller simulator) and
the stand-ins on core 1. PostgreSQL and Redis are system services and run wherever the kernel
puts them: their CPU is not in the app's figures.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import gc
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
import redis.asyncio as aioredis

from bench.standins import Config as StandInConfig
from tests.standins.deepgram import tone
from voice_app.config import Settings
from voice_app.simulator.call import CallConfig, run_call
from voice_app.simulator.caller import Step
from voice_app.simulator.report import CallReport

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"  # gitignored: logs and JSON of each run
DB_POOL_SIZE = Settings.from_env({}, dotenv=None).database_pool_size  # the app's default
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
APP_CORE, DRIVER_CORE = 0, 1


# --- The caller's script -------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    text: str  # what the STT stand-in "hears" (plus the turn's tag)
    seconds: float  # how long the caller talks (a steady tone: the stand-in hears by energy)
    barge_in_after_ms: float | None = None  # talk over the previous reply this long after it starts


# A cycle of four turns: a tool turn (todo_list, then words), two plain answers, of which the
# second is interrupted 1.2 s in by the caller's next line, and a closing one.
SCRIPT = (
    Line("what is on my todo list", 1.4),
    Line("who is on my team", 1.2),
    Line("stop what is on my calendar today", 1.6, barge_in_after_ms=1200),
    Line("thanks that is all", 1.0),
)
SECONDS_PER_TURN = 7.5  # line + reply latency + reply audio + the caller's 0.7 s pause, measured


def script_steps(turns: int) -> list[Step]:
    """`turns` caller steps cycling through SCRIPT (the stand-in cycles through it the same way)."""
    steps = []
    for i in range(turns):
        line = SCRIPT[i % len(SCRIPT)]
        audio = tone(int(line.seconds * 8000))
        steps.append(Step("say", line.text, line.barge_in_after_ms, audio=audio))
    return steps


def call_config(url: str, turns: int, *, record: bool) -> CallConfig:
    return CallConfig(
        url=url,
        public_url=url,
        steps=script_steps(turns),
        record=record,
        max_duration_s=30 + turns * 3 * SECONDS_PER_TURN,
    )


# --- Provider latencies ---------------------------------------------------------------------------


@dataclass
class Knobs:
    """What the stand-ins inject; every figure the benchmarks print is measured, not these."""

    stt_endpointing_ms: int = 300
    stt_latency_ms: int = 50
    tts_ttfb_ms: int = 150
    tts_ms_per_char: float = 60.0
    llm_ttft_ms: int = 300
    llm_tokens_per_s: float = 80.0

    def standin_config(self) -> StandInConfig:
        return StandInConfig(
            stt_latency=self.stt_latency_ms / 1000,
            endpointing_ms=self.stt_endpointing_ms,
            tts_ttfb=self.tts_ttfb_ms / 1000,
            ms_per_char=self.tts_ms_per_char,
            ttft=self.llm_ttft_ms / 1000,
            tokens_per_second=self.llm_tokens_per_s,
            lines=[line.text for line in SCRIPT],
        )

    def describe(self) -> str:
        return (
            f"stand-ins: STT endpointing {self.stt_endpointing_ms} ms + latency "
            f"{self.stt_latency_ms} ms; LLM TTFT {self.llm_ttft_ms} ms, "
            f"{self.llm_tokens_per_s:g} tokens/s; TTS TTFB {self.tts_ttfb_ms} ms, "
            f"{self.tts_ms_per_char:g} ms of audio per character"
        )

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        for f in fields(cls):
            parser.add_argument(
                "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default
            )

    @classmethod
    def from_args(cls, args: Any) -> Knobs:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def add_arguments(parser: Any) -> None:
    """Options every benchmark shares: provider latencies, waiting for quiet, the app's code."""
    Knobs.add_arguments(parser)
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="s to wait for others' load to pass"
    )
    parser.add_argument(
        "--max-live-calls",
        type=int,
        default=0,
        help="the app's MAX_LIVE_CALLS (default 0: no limit, to measure the engine itself)",
    )
    parser.add_argument(
        "--app-ref",
        metavar="REV",
        help="run the app from this git revision (unpacked to a temp dir), not the work tree",
    )


# --- Child processes ----------------------------------------------------------------------------


class Children:
    """Every process a benchmark starts, so each is stopped by its PID whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        atexit.register(self.stop_all)  # last resort if a finally block never ran

    def start(
        self, cmd: list[str], *, core: int, log: Path, cwd: Path = ROOT, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # A session of its own: Ctrl-C reaches the driver only, which then stops each child.
            proc = subprocess.Popen(cmd, cwd=cwd, stderr=out, start_new_session=True, **kwargs)
        self.procs.append(proc)
        pin(proc.pid, core)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


def checkout(ref: str, into: Path) -> Path:
    """The app's files at git revision `ref`, unpacked into `into` (read-only on the repo)."""
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, capture_output=True, check=True, timeout=60
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    )
    print(f"app: {ref} ({commit.stdout.strip()}), unpacked in {into}", flush=True)
    return into


def pin(pid: int, core: int) -> None:
    """Pin a process and every thread it has so far (threads started later inherit it)."""
    cores = {core} if core in os.sched_getaffinity(0) | {core} else os.sched_getaffinity(0)
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cores)


def pin_driver() -> None:
    """The simulator (this process) gets the other core, away from the app; and its start-up
    heap is frozen, so the garbage collector's full passes (~100 ms over it) do not make the
    simulated callers miss their 20 ms frames."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {DRIVER_CORE})
    gc.collect()
    gc.freeze()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


# --- The bench: services, stand-ins, the app ------------------------------------------------------


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    gc_log: Path | None = None  # the garbage collector's long passes (bench.gc_probe)
    heap_log: Path | None = None  # tracemalloc snapshots (bench.heap_probe)

    def gc_pauses(self, start: float, end: float) -> list[tuple[int, float]]:
        """(generation, ms) of each logged collection between `start` and `end`."""
        if self.gc_log is None or not self.gc_log.exists():
            return []
        rows = [json.loads(line) for line in self.gc_log.read_text().splitlines() if line]
        return [(r["gen"], r["ms"]) for r in rows if start <= r["at"] <= end]

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Bench:
    """Scratch database and Redis, the stand-ins process, and app processes on demand."""

    name: str
    knobs: Knobs
    app_ref: str | None = None  # a git revision to run the app from, instead of the work tree
    max_live_calls: int = 0  # the app's MAX_LIVE_CALLS; 0 measures the engine without a limit
    children: Children = field(default_factory=Children)
    database_url: str = ""
    app_dir: Path = ROOT  # where the app's code is run from
    standins: subprocess.Popen[bytes] | None = None
    urls: dict[str, str] = field(default_factory=dict)
    _http: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def run(self) -> AsyncIterator[Bench]:
        pin_driver()
        name = f"va_bench_{os.getpid()}"
        admin = await asyncpg.connect(ADMIN_URL)
        redis = aioredis.from_url(REDIS_URL)
        self._http = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=None))
        snapshot = None
        try:
            if self.app_ref:
                snapshot = Path(tempfile.mkdtemp(prefix="va_bench_app_"))
                self.app_dir = checkout(self.app_ref, snapshot)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
            self.database_url = _with_database(ADMIN_URL, name)
            await redis.flushdb()
            self._start_standins()
            for command in (["migrate"], ["seed", "--demo"]):  # the app's own, from its tree
                await asyncio.to_thread(self._cli, command)
            yield self
        finally:
            self.children.stop_all()
            await self._http.aclose()
            await redis.flushdb()
            await redis.aclose()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
            if snapshot is not None:
                shutil.rmtree(snapshot, ignore_errors=True)

    def _cli(self, command: list[str]) -> None:
        log = RESULTS / f"{self.name}-setup.log"
        proc = self.children.start(
            [sys.executable, "-m", "voice_app.cli", *command],
            core=APP_CORE,
            log=log,
            cwd=self.app_dir,
            stdout=subprocess.DEVNULL,
            env=self.app_env(free_port()),
        )
        if proc.wait(120) != 0:
            raise RuntimeError(f"voice-app {' '.join(command)} failed; see {log}")
        self.children.procs.remove(proc)

    def _start_standins(self) -> None:
        config = json.dumps(dataclasses.asdict(self.knobs.standin_config()))
        proc = self.children.start(
            [sys.executable, "-m", "bench.standins", "--config", config],
            core=DRIVER_CORE,
            log=RESULTS / f"{self.name}-standins.log",
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # blocks until READY (or EOF if it failed)
        if not line.startswith("READY "):
            raise RuntimeError(f"stand-ins did not start; see {RESULTS}/{self.name}-standins.log")
        self.urls = json.loads(line.removeprefix("READY "))
        self.standins = proc

    def app_env(self, port: int) -> dict[str, str]:
        # Nothing of the caller's environment that the app reads leaks in (no real keys).
        settings_vars = {f.name.upper() for f in fields(Settings)}
        env = {k: v for k, v in os.environ.items() if k not in settings_vars}
        # The app's code comes first (its tree may be a snapshot); bench.gc_probe from ours.
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(self.app_dir), str(ROOT)]))
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=REDIS_URL,
            ENVIRONMENT="development",
            PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            HOST="127.0.0.1",
            PORT=str(port),
            SECRET_KEY="bench-secret-key",
            DEEPGRAM_API_KEY="bench-deepgram-key",
            DEEPGRAM_URL=self.urls["deepgram"],
            ANTHROPIC_API_KEY="bench-anthropic-key",
            ANTHROPIC_BASE_URL=self.urls["anthropic"],
            SHUTDOWN_GRACE_SECONDS="2",
            MAX_LIVE_CALLS=str(self.max_live_calls),
            LOG_FORMAT="json",
        )
        return env

    @asynccontextmanager
    async def app(
        self,
        label: str = "",
        *,
        gc_log: bool = False,
        gc_freeze: bool = False,
        heap_frames: int = 0,
    ) -> AsyncIterator[App]:
        """`voice-app serve` in its own process, pinned to the app core, until the block ends.
        `gc_log`: launched through bench.gc_probe, which logs the garbage collector's passes;
        `gc_freeze`: ... and freezes the heap left by imports first (an experiment);
        `heap_frames`: launched through bench.heap_probe (tracemalloc keeping that many frames per
        allocation; a snapshot every minute)."""
        port = free_port()
        name = f"{self.name}{'-' + label if label else ''}"
        log = RESULTS / f"{name}-app.log"
        log.unlink(missing_ok=True)
        env = self.app_env(port)
        module = "voice_app.cli"
        gc_path = None
        if gc_log or gc_freeze:
            env["BENCH_GC_FREEZE"] = "1" if gc_freeze else "0"
            gc_path = RESULTS / f"{name}-gc.jsonl"
            gc_path.unlink(missing_ok=True)
            env["BENCH_GC_LOG"], module = str(gc_path), "bench.gc_probe"
        heap_path = None
        if heap_frames:
            heap_path = RESULTS / f"{name}-heap.jsonl"
            heap_path.unlink(missing_ok=True)
            env["BENCH_HEAP_FRAMES"] = str(heap_frames)
            env["BENCH_HEAP_LOG"], module = str(heap_path), "bench.heap_probe"
        proc = self.children.start(
            [sys.executable, "-m", module, "serve", "--port", str(port)],
            core=APP_CORE,
            log=log,
            cwd=self.app_dir,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        app = App(proc, f"http://127.0.0.1:{port}", log, gc_path, heap_path)
        try:
            await self._until_ready(app)
            pin(proc.pid, APP_CORE)  # again: the threads it started while booting
            yield app
        finally:
            await asyncio.to_thread(self.children.stop, proc)

    async def _until_ready(self, app: App) -> None:
        assert self._http is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.proc.poll() is not None:
                raise RuntimeError(f"the app exited ({app.proc.returncode}); see {app.log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self._http.get(app.url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the app did not become ready; see {app.log}")

    # Stand-in timings and the app's own record of which call said what ---------------------

    async def reset_timings(self) -> None:
        assert self._http is not None
        await self._http.post(self.urls["control"] + "/reset")

    async def timings(self) -> dict[str, Any]:
        assert self._http is not None
        return (await self._http.get(self.urls["control"] + "/timings")).json()  # type: ignore[no-any-return]

    async def caller_lines(self) -> list[tuple[str, str]]:
        """(call SID, text) of every caller turn the app logged: the tags say which socket."""
        conn = await asyncpg.connect(self.database_url)  # the owner: not limited by RLS
        try:
            rows = await conn.fetch("SELECT call_sid, content FROM messages WHERE role = 'user'")
        finally:
            await conn.close()
        return [(r["call_sid"], r["content"]) for r in rows]


async def host_load(seconds: float = 2.0) -> float:
    """CPU the whole host used over `seconds`, in % of one core."""

    def busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)

    before, started = busy(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (busy() - before) / (time.monotonic() - started)


async def wait_for_quiet(max_wait_s: float, threshold: float = 25.0) -> None:
    """Others' jobs on this host disturb the figures: wait (bounded) until it is quiet, and say so.
    Call it while none of our own load runs."""
    started = time.monotonic()
    load = await host_load()
    while load > threshold and time.monotonic() - started < max_wait_s:
        load = await host_load()
    waited = time.monotonic() - started
    note = "" if load <= threshold else "; still busy: expect noisier tails"
    print(
        f"host load before this run: {load:.0f}% of one core (waited {waited:.0f} s){note}",
        flush=True,
    )


# --- Running calls ------------------------------------------------------------------------------


@asynccontextmanager
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    # One client for every call (see voice_app.simulator.cli.run_many for why).
    async with httpx.AsyncClient(timeout=15.0, limits=httpx.Limits(max_connections=None)) as http:
        yield http


def callers(config: CallConfig, seed: int = 1) -> Iterator[CallConfig]:
    """Endless per-call configs whose callers pause 0.5-1.5 s (seeded) before their next line.

    Identical scripts would keep every call's turns in lockstep (all LLM streams at once, then
    all quiet); real callers drift apart, and so do these after a turn or two."""
    rng = random.Random(seed)
    while True:
        yield dataclasses.replace(config, call_sid=None, quiet_ms=rng.uniform(500, 1500))


async def run_calls(
    config: CallConfig, calls: int, *, ramp_s: float = 0.0, parallel: int | None = None
) -> list[CallReport]:
    """`calls` calls started evenly over `ramp_s`, at most `parallel` at a time."""
    limit = asyncio.Semaphore(parallel or calls)
    configs = callers(config)
    async with http_client() as http:

        async def one(i: int, config: CallConfig) -> CallReport:
            await asyncio.sleep(ramp_s * i / calls)
            async with limit:
                return await run_call(config, http=http)

        return list(await asyncio.gather(*(one(i, next(configs)) for i in range(calls))))


async def warm_up(app: App) -> None:
    """One short call, so imports, pools and caches are not billed to the first measured turn."""
    await run_calls(call_config(app.url, 1, record=False), 1)


# --- Resource sampling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    cpu_s: float  # user + system, all threads
    rss: int
    fds: int


class Sampler:
    """Samples CPU time, RSS and open files of named processes every `interval` seconds, and the
    busy time of each core ("core0", "core1", ...): what our processes did not use of a core was
    someone else's load, which disturbs the figures (pinning does not reserve a core)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.cores = len(psutil.cpu_times(percpu=True))
        cores = [f"core{i}{part}" for i in range(self.cores) for part in ("", "-irq")]
        names = [*pids, *cores]
        self.samples: dict[str, list[Sample]] = {name: [] for name in names}
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        now = time.monotonic()
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error), proc.oneshot():
                cpu = proc.cpu_times()
                self.samples[name].append(
                    Sample(now, cpu.user + cpu.system, proc.memory_info().rss, proc.num_fds())
                )
        for i, t in enumerate(psutil.cpu_times(percpu=True)):
            busy = t.user + t.nice + t.system + t.irq + t.softirq + t.steal
            self.samples[f"core{i}"].append(Sample(now, busy, 0, 0))
            # Interrupt work (loopback networking mostly) is billed to no process.
            self.samples[f"core{i}-irq"].append(Sample(now, t.irq + t.softirq, 0, 0))

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()

    def window(self, name: str, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples[name] if start <= s.at <= end]

    def cpu_percent(self, name: str, start: float, end: float) -> float | None:
        """Share of one core used between `start` and `end` (nearest samples inside)."""
        inside = self.window(name, start, end)
        if len(inside) < 2 or inside[-1].at <= inside[0].at:
            return None
        first, last = inside[0], inside[-1]
        return 100 * (last.cpu_s - first.cpu_s) / (last.at - first.at)

    def others_on_core(self, core: int, ours: list[str], start: float, end: float) -> float | None:
        """CPU (% of the core) spent on `core` by anything but the processes `ours` pinned there:
        PostgreSQL, Redis, the kernel's loopback work, other people's jobs."""
        busy = self.cpu_percent(f"core{core}", start, end)
        used = [self.cpu_percent(name, start, end) for name in ours]
        if busy is None or None in used:
            return None
        return max(0.0, busy - sum(u for u in used if u is not None))

    def foreign_percent(self, start: float, end: float) -> float | None:
        """CPU (% of one core) the whole host spent on anything but our processes."""
        cores = [self.cpu_percent(f"core{i}", start, end) for i in range(self.cores)]
        ours = [self.cpu_percent(name, start, end) for name in self.procs]
        if None in cores or None in ours:
            return None
        return max(0.0, sum(c for c in cores if c) - sum(o for o in ours if o))

    def peak(self, name: str, start: float, end: float) -> Sample | None:
        inside = self.window(name, start, end)
        return max(inside, key=lambda s: s.rss) if inside else None

    def latest(self, name: str) -> Sample | None:
        return self.samples[name][-1] if self.samples[name] else None


class LoopProbe:
    """GET /healthz every `interval` s: a trivial handler, so its latency is the time the app's
    event loop took to get to it. Stalls in the loop show up here whatever their cause."""

    def __init__(self, url: str, interval: float = 0.2) -> None:
        self.url = url + "/healthz"
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (sent at, seconds to answer)
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        async with httpx.AsyncClient(timeout=30.0) as http:
            while True:
                sent = time.monotonic()
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(self.url)
                    self.samples.append((sent, time.monotonic() - sent))
                await asyncio.sleep(max(0.0, sent + self.interval - time.monotonic()))

    def __enter__(self) -> LoopProbe:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def ms(self, start: float, end: float) -> list[float]:
        return [lat * 1000 for at, lat in self.samples if start <= at <= end]


class DbProbe:
    """The app's PostgreSQL connections, every `interval` s, from pg_stat_activity: how many
    exist and how many are held (running a query, or inside a transaction). The app's pool has
    10; when all are held, every other query in the process queues for one."""

    def __init__(self, database: str, interval: float = 0.5) -> None:
        self.database = database
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (at, connections, held)
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        conn = await asyncpg.connect(ADMIN_URL)  # another database: not counted itself
        query = (
            "SELECT count(*), count(*) FILTER (WHERE state IN ('active', 'idle in transaction'))"
            " FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'"
        )
        try:
            while True:
                total, held = await conn.fetchrow(query, self.database)
                self.samples.append((time.monotonic(), total, held))
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    def __enter__(self) -> DbProbe:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def held(self, start: float, end: float) -> tuple[int, float]:
        """Most connections held at once, and the share of samples with the pool all held."""
        inside = [held for at, _, held in self.samples if start <= at <= end]
        if not inside:
            return 0, 0.0
        return max(inside), 100 * sum(h >= DB_POOL_SIZE for h in inside) / len(inside)


def app_log_levels(log: Path) -> Counter[str]:
    """How many records of each level the app logged (JSON lines; a traceback is one record)."""
    levels: Counter[str] = Counter()
    with contextlib.suppress(OSError), log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                levels[str(json.loads(line).get("level", "?"))] += 1
            except (ValueError, AttributeError):
                levels["unparsed"] += 1
    return levels


def write_json(path: Path, body: Any) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does, so every finally block (and child cleanup) runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_main(bench: Callable[[Any], Coroutine[Any, Any, None]], args: Any) -> None:
    """Run one benchmark to the end; Ctrl-C or SIGTERM stops it and its child processes."""
    with stop_on_sigterm():
        try:
            asyncio.run(bench(args))
        except KeyboardInterrupt:
            print("interrupted; child processes stopped")
