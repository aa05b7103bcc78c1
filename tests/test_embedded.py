"""The embedded PostgreSQL and Redis: real processes in a scratch data folder.

The folder is made under /tmp rather than pytest's tmp_path: as root the services run as an
unprivileged user, and pytest's base temp folder is private to the current user (mode 0700).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from voice_app import embedded
from voice_app.embedded import (
    EmbeddedServiceError,
    embedded_services,
    start_postgres,
    start_redis,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    scratch = Path(tempfile.mkdtemp(prefix="voice-embedded-"))
    scratch.chmod(0o755)  # our own folder: let the unprivileged service user in when root
    try:
        yield scratch / "data"
    finally:
        embedded.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its (foreign) parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rpartition(")")[2].split()[0] == "Z"


async def test_services_start_persist_across_restart_and_stop(data_dir: Path) -> None:
    with embedded_services(data_dir, need_postgres=True, need_redis=True) as services:
        assert services.database_url and services.redis_url
        assert services.database_url.startswith("postgresql://postgres@127.0.0.1:")
        assert services.database_url.endswith("/voice_app")
        assert services.postgres and services.redis
        pids = {"postgres": services.postgres.pid, "redis": services.redis.pid}
        for name, pid in pids.items():
            assert (data_dir / "run" / f"{name}.pid").read_text().strip() == str(pid)
            assert not gone(pid)

        conn = await asyncpg.connect(services.database_url)
        await conn.execute("CREATE TABLE notes (body text)")
        await conn.execute("INSERT INTO notes VALUES ('remember me')")
        await conn.close()
        client = aioredis.from_url(services.redis_url)
        await client.set("greeting", "hello")
        await client.aclose()
        first_urls = (services.database_url, services.redis_url)

    for name, pid in pids.items():
        assert gone(pid), f"{name} still running"
        assert not (data_dir / "run" / f"{name}.pid").exists()

    with embedded_services(data_dir, need_postgres=True, need_redis=True) as services:
        assert (services.database_url, services.redis_url) == first_urls  # ports were kept
        assert services.database_url and services.redis_url
        conn = await asyncpg.connect(services.database_url)
        assert await conn.fetchval("SELECT body FROM notes") == "remember me"
        await conn.close()
        client = aioredis.from_url(services.redis_url)
        assert await client.get("greeting") == b"hello"
        await client.aclose()


async def test_project_migrations_apply_to_embedded_postgres(data_dir: Path) -> None:
    from voice_app.db.migrate import migrate

    with embedded_services(data_dir, need_postgres=True, need_redis=False) as services:
        assert services.redis is None and services.redis_url is None
        assert services.database_url
        assert await migrate(services.database_url)


def test_stale_pid_files_are_replaced_and_foreign_processes_left_alone(data_dir: Path) -> None:
    run = data_dir / "run"
    run.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        # A live process that is not ours (wrong program, wrong folder) must not be touched.
        (run / "redis.pid").write_text(f"{bystander.pid}\n")
        service = start_redis(data_dir)
        assert service.pid != bystander.pid
        assert (run / "redis.pid").read_text().strip() == str(service.pid)
        service.stop()
        assert bystander.poll() is None

        # A PID file naming a dead process is simply replaced.
        (run / "redis.pid").write_text("999999999\n")
        service = start_redis(data_dir)
        assert service.owned and service.running
        service.stop()
    finally:
        bystander.kill()
        bystander.wait()


def test_service_left_by_a_crashed_run_is_adopted_then_stopped(data_dir: Path) -> None:
    crashed_run = (
        "import os, sys; from pathlib import Path; from voice_app.embedded import start_redis;"
        "print(start_redis(Path(sys.argv[1])).pid, flush=True); os._exit(0)"  # no cleanup
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", crashed_run, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=30,
    )
    orphan = int(result.stdout.strip())
    assert not gone(orphan)

    service = start_redis(data_dir)
    assert service.pid == orphan and service.owned
    service.stop()
    assert gone(orphan)
    assert not (data_dir / "run" / "redis.pid").exists()


def test_sigterm_to_voice_app_stops_its_services(data_dir: Path) -> None:
    app = (
        "import sys, time\nfrom pathlib import Path\n"
        "from voice_app.embedded import embedded_services\n"
        "with embedded_services(Path(sys.argv[1]), need_postgres=False) as services:\n"
        "    print(services.redis.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", app, str(data_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout
    redis_pid = int(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM
    assert gone(redis_pid)
    assert not (data_dir / "run" / "redis.pid").exists()


def test_second_start_while_the_first_runs_shares_the_service(data_dir: Path) -> None:
    first = start_redis(data_dir)
    second = start_redis(data_dir)
    assert second.pid == first.pid and second.url == first.url
    assert not second.owned
    second.stop()  # not its to stop
    assert first.running
    first.stop()
    assert gone(first.pid)


def test_busy_port_is_a_clear_error_and_a_taken_saved_port_moves(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]

        with pytest.raises(
            EmbeddedServiceError, match=rf"port 127\.0\.0\.1:{busy} is already in use"
        ):
            start_redis(data_dir, port=busy)

        (data_dir / "run" / "redis.port").write_text(f"{busy}\n")  # as if saved by an earlier run
        with caplog.at_level(logging.WARNING, logger="voice_app.embedded"):
            service = start_redis(data_dir)
        assert service.port != busy
        assert f"port {busy} is taken" in caplog.text
        assert (data_dir / "run" / "redis.port").read_text().strip() == str(service.port)
        service.stop()


def test_a_server_that_dies_at_start_reports_its_log(data_dir: Path) -> None:
    data_dir.mkdir()
    fake = data_dir.parent / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot open the frobnicator' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedServiceError) as failure:
        start_redis(data_dir, binary=fake)
    message = str(failure.value)
    assert "exited during start-up (exit code 3)" in message
    assert "cannot open the frobnicator" in message
    assert str(data_dir / "logs" / "redis.log") in message
    assert not (data_dir / "run" / "redis.pid").exists()


def test_missing_postgres_binaries_are_a_clear_error(data_dir: Path) -> None:
    with pytest.raises(EmbeddedServiceError, match=r"PostgreSQL binaries not found in .*initdb"):
        start_postgres(data_dir, bin_dir=data_dir.parent / "no-such-bin")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the services to another user")
def test_as_root_an_unreachable_data_folder_is_a_clear_error() -> None:
    private = Path(tempfile.mkdtemp(prefix="voice-embedded-private-"))  # mode 0700
    try:
        with pytest.raises(EmbeddedServiceError) as failure:
            start_redis(private / "data")
        message = str(failure.value)
        assert f"user {embedded.SERVICE_USER!r}" in message
        assert f"{private} (mode drwx------)" in message
        assert "DATA_DIR" in message
    finally:
        shutil.rmtree(private, ignore_errors=True)
