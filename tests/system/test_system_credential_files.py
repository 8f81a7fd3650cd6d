"""Credentials as files (`RABBITMQ_DEFAULT_USER_FILE`, `RABBITMQ_DEFAULT_PASS_FILE`,
`PGPASSWORD_FILE`), read again on every (re)connect: a rotated password reaches running ping and
pong processes without a restart, as a Kubernetes Secret volume refreshed by the kubelet does.

Real binaries against a private RabbitMQ node and a private PostgreSQL server (never the shared
ones). Each rotation is proved in both directions: after the server's password changed and the
connections were cut, the processes stay out (the old password in the file is refused), and once
the file holds the new password the same processes (same pids) are back and serve traffic.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests

from broker_cluster import PrivatePostgres
from system_helpers import PrivateBroker, Stack, http_status, wait_until


def write_secret_file(path: Path, value: str) -> None:
    """Replace the file atomically (a new file renamed over the old), as the kubelet swaps a
    Secret volume's files, so a reader never sees half a password."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(value + "\n")  # a trailing line break, as `echo` leaves, is ignored
    os.chmod(tmp, 0o400)
    os.replace(tmp, path)


def ctl_ok(broker: PrivateBroker, *args: str) -> str:
    result = broker.ctl(*args)
    assert result.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def post_ping(stack: Stack, msg: str) -> requests.Response:
    return requests.post(f"{stack.ping_url}/ping", json={"msg": msg}, timeout=10)


def stored_msgs(stack: Stack) -> list[str]:
    return [m["msg"] for m in stack.stored(limit=1000)]


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    path = tmp_path / "secrets"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def file_stack(request: pytest.FixtureRequest, fault_stack: Stack, private_broker: PrivateBroker,
               secrets_dir: Path) -> Iterator[tuple[Stack, str]]:
    """ping and pong on the private broker with a user of their own whose name and password they
    read from files (the variables RABBITMQ_DEFAULT_USER/PASS are not set at all)."""
    user = f"pp-files-{uuid.uuid4().hex[:6]}"
    ctl_ok(private_broker, "add_user", user, "first-password-1")
    ctl_ok(private_broker, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
    write_secret_file(secrets_dir / "username", user)
    write_secret_file(secrets_dir / "password", "first-password-1")
    broker_env = fault_stack.broker.env(fault_stack.queue)
    env = {
        "RABBITMQ_DEFAULT_USER_FILE": str(secrets_dir / "username"),
        "RABBITMQ_DEFAULT_PASS_FILE": str(secrets_dir / "password"),
    }
    original = fault_stack.service_env

    def service_env(port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
        merged = original(port, {**env, **(extra or {})})
        for name in ("RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"):
            merged.pop(name, None)
        assert merged["RABBITMQ_PORT"] == broker_env["RABBITMQ_PORT"]
        return merged

    fault_stack.service_env = service_env  # type: ignore[method-assign]
    try:
        yield fault_stack, user
    finally:
        private_broker.ctl("delete_user", user)


def connections_of(broker: PrivateBroker, user: str) -> int:
    out = ctl_ok(broker, "-q", "list_connections", "user", "--no-table-headers")
    return sum(1 for line in out.splitlines() if line.strip() == user)


def test_a_rotated_broker_password_file_is_used_on_reconnect_without_a_restart(
        file_stack: tuple[Stack, str], private_broker: PrivateBroker, secrets_dir: Path) -> None:
    stack, user = file_stack
    ping, pong = stack.start_ping(), stack.start_pong()
    stack.wait_ready("ping")
    stack.wait_ready("pong")
    assert post_ping(stack, "before-rotation").status_code == 200
    wait_until(lambda: "before-rotation" in stored_msgs(stack), 30, "the first message in pong")
    assert connections_of(private_broker, user) == 2, "ping and pong log in as the file's user"
    pids = (ping.pid, pong.pid)

    # The broker's password changes first; cut the connections so both must log in again.
    ctl_ok(private_broker, "change_password", user, "second-password-2")
    ctl_ok(private_broker, "close_all_connections", "credentials rotated")
    # With the old password still in the file, every reconnect is refused: not ready.
    for url in (stack.ping_url, stack.pong_url):
        wait_until(lambda url=url: http_status(f"{url}/readyz") == 503, 30,
                   f"{url} to report not ready with the old password")
    assert post_ping(stack, "refused").status_code == 503
    assert connections_of(private_broker, user) == 0

    # The kubelet refreshes the Secret volume: the same processes read the new file.
    write_secret_file(secrets_dir / "password", "second-password-2")
    stack.wait_ready("ping", timeout=60)
    stack.wait_ready("pong", timeout=60)
    assert (ping.pid, pong.pid) == pids and ping.alive() and pong.alive(), "no restart"
    assert post_ping(stack, "after-rotation").status_code == 200
    wait_until(lambda: "after-rotation" in stored_msgs(stack), 30, "the message after rotation")
    assert connections_of(private_broker, user) == 2
    for proc in (ping, pong):
        log = proc.log_path.read_text(errors="replace")
        assert "first-password-1" not in log and "second-password-2" not in log, "never logged"
        assert str(secrets_dir / "password") in log, "the summary names the file"


def test_a_variable_and_its_file_together_stop_the_service_at_start(
        fault_stack: Stack, secrets_dir: Path) -> None:
    write_secret_file(secrets_dir / "password", "unused-password")
    proc = fault_stack.start_ping({"RABBITMQ_DEFAULT_PASS": "also-set-password",
                                   "RABBITMQ_DEFAULT_PASS_FILE": str(secrets_dir / "password")})
    assert proc.popen is not None
    assert proc.popen.wait(timeout=30) == 2
    log = proc.log_path.read_text(errors="replace")
    assert "either RABBITMQ_DEFAULT_PASS or RABBITMQ_DEFAULT_PASS_FILE, not both" in log, log
    assert "also-set-password" not in log and "unused-password" not in log


class PasswordPostgres(PrivatePostgres):
    """A private server where the `pong` role logs in with a password (scram-sha-256) and the
    superuser keeps trust for the test's own administration."""

    def start(self) -> None:
        super().start()
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        if self.run_as is not None:
            os.chown(hba, self.run_as.pw_uid, self.run_as.pw_gid)
        reloaded = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "reload")
        assert reloaded.returncode == 0, reloaded.stderr

    def sql(self, statement: str) -> str:
        psql = str(self.bin / "psql") if (self.bin / "psql").exists() else "psql"
        result = self._run(psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                           "-d", "postgres", "-qAtc", statement)
        assert result.returncode == 0, f"{statement}: {result.stderr}"
        return result.stdout


@pytest.fixture
def password_postgres() -> Iterator[PasswordPostgres]:
    server = PasswordPostgres()
    try:
        server.start()
        yield server
    except BaseException:
        print(f"\n===== private PostgreSQL log =====\n{server.log_tail()}")
        raise
    finally:
        server.destroy()


def test_a_rotated_postgres_password_file_is_used_by_new_connections(
        fault_stack: Stack, private_broker: PrivateBroker, password_postgres: PasswordPostgres,
        secrets_dir: Path) -> None:
    db = f"pong_{uuid.uuid4().hex[:8]}"
    password_postgres.sql("CREATE ROLE pong LOGIN PASSWORD 'pg-first-1'")
    password_postgres.sql(f"CREATE DATABASE {db} OWNER pong")
    write_secret_file(secrets_dir / "pgpassword", "pg-first-1")
    pong = fault_stack.start_pong({
        "PONG_STORE": "postgres",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(password_postgres.port),
        "PGUSER": "pong",
        "PGDATABASE": db,
        "PGPASSWORD_FILE": str(secrets_dir / "pgpassword"),
    })
    fault_stack.start_ping()
    fault_stack.wait_ready("pong")
    fault_stack.wait_ready("ping")
    assert post_ping(fault_stack, "pg-before").status_code == 200
    wait_until(lambda: "pg-before" in stored_msgs(fault_stack), 30, "the first row")

    # New password in the server; every pooled connection of pong is cut.
    password_postgres.sql("ALTER ROLE pong PASSWORD 'pg-second-2'")
    password_postgres.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE usename = 'pong'")
    wait_until(lambda: http_status(f"{fault_stack.pong_url}/readyz") == 503, 30,
               "pong's store to fail with the old password")

    write_secret_file(secrets_dir / "pgpassword", "pg-second-2")
    fault_stack.wait_ready("pong", timeout=60)
    assert pong.alive(), "no restart"
    assert post_ping(fault_stack, "pg-after").status_code == 200
    wait_until(lambda: "pg-after" in stored_msgs(fault_stack), 30, "the row after rotation")
    count = password_postgres.sql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = 'pong' "
                                  f"AND datname = '{db}'")
    assert int(count.strip()) >= 1, "pong holds connections opened with the new password"
    log = pong.log_path.read_text(errors="replace")
    assert "pg-first-1" not in log and "pg-second-2" not in log
