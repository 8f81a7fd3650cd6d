"""Helpers of the system tests: the binaries, free ports, child processes with logs, the nginx
gateway, AMQP tools (through `pingpong-loadgen`) and a private RabbitMQ node for fault tests.

The module name is unique across tests/ (see tests/deploy/conftest.py) so `import` never picks
another directory's helpers.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Self, TypeVar

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "deploy" / "local" / "nginx.conf.template"
BINARIES = ("ping", "pong", "pingpong-loadgen")
T = TypeVar("T")


def in_ci() -> bool:
    """CI=true turns every missing prerequisite into a failure instead of a skip."""
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(reason)


def binaries() -> dict[str, Path]:
    """The service binaries from PINGPONG_BIN_DIR (default target/debug); fails if one is missing."""
    bin_dir = Path(os.environ.get("PINGPONG_BIN_DIR", ROOT / "target" / "debug"))
    found = {name: bin_dir / name for name in BINARIES}
    absent = [str(path) for path in found.values() if not os.access(path, os.X_OK)]
    if absent:
        pytest.fail(
            f"missing binaries: {', '.join(absent)}. Build them with "
            "`cargo build -p pingpong-ping -p pingpong-pong -p pingpong-loadgen` "
            "or point PINGPONG_BIN_DIR at a directory that has them.",
            pytrace=False,
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns a truthy value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status of GET `url`, or None when nothing answers."""
    try:
        return requests.get(url, timeout=timeout).status_code
    except requests.RequestException:
        return None


@dataclass(frozen=True)
class Broker:
    """How to reach a RabbitMQ broker."""

    host: str = "127.0.0.1"
    port: int = 5672
    vhost: str = "/"
    user: str = "guest"
    password: str = "guest"

    @classmethod
    def from_env(cls) -> Broker:
        env = os.environ
        return cls(
            host=env.get("RABBITMQ_HOST", "127.0.0.1"),
            port=int(env.get("RABBITMQ_PORT", "5672")),
            vhost=env.get("RABBITMQ_VHOST", "/"),
            user=env.get("RABBITMQ_DEFAULT_USER", "guest"),
            password=env.get("RABBITMQ_DEFAULT_PASS", "guest"),
        )

    def env(self, queue: str) -> dict[str, str]:
        return {
            "RABBITMQ_HOST": self.host,
            "RABBITMQ_PORT": str(self.port),
            "RABBITMQ_VHOST": self.vhost,
            "RABBITMQ_DEFAULT_USER": self.user,
            "RABBITMQ_DEFAULT_PASS": self.password,
            "RABBITMQ_QUEUE": queue,
        }


def base_env() -> dict[str, str]:
    """The test's environment without RABBITMQ_* (every child gets those explicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}


class Proc:
    """A child process with its output in a log file; stopped by signal, never by name."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap (no graceful shutdown: what a crash looks like)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (SIGCONT first, in case a test froze it), SIGKILL after `timeout`; exit code."""
        if self.popen is None:
            return None
        if self.alive():
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        return self.popen.returncode

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """ping, pong and optionally nginx on free ports, one queue, logs under `workdir`."""

    bins: dict[str, Path]
    broker: Broker
    workdir: Path
    queue: str = field(default_factory=lambda: f"pp-test-{uuid.uuid4().hex[:12]}")
    ping_port: int = field(default_factory=free_port)
    pong_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)
    generation: int = 0
    gateway_pong_addrs: list[str] = field(default_factory=list)

    @property
    def ping_url(self) -> str:
        return f"http://127.0.0.1:{self.ping_port}"

    @property
    def pong_url(self) -> str:
        return f"http://127.0.0.1:{self.pong_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def dead_queue(self) -> str:
        return f"{self.queue}.dead"

    def service_env(self, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = base_env()
        env.update(self.broker.env(self.queue))
        env.update({"LISTEN_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "info", "LOG_FORMAT": "text"})
        env.update(extra or {})
        return env

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.generation += 1
        key = name if name not in self.procs else f"{name}#{self.generation}"
        proc = Proc(name, argv, env, self.workdir / f"{key}.log").start()
        self.procs[key] = proc
        return proc

    def start_ping(self, extra_env: dict[str, str] | None = None) -> Proc:
        return self._start("ping", [str(self.bins["ping"])], self.service_env(self.ping_port, extra_env))

    def start_pong(self, extra_env: dict[str, str] | None = None) -> Proc:
        return self._start("pong", [str(self.bins["pong"])], self.service_env(self.pong_port, extra_env))

    def start_gateway(self, ping_addrs: list[str] | None = None,
                      pong_addrs: list[str] | None = None) -> Proc:
        """nginx from the shipped template; `ping_addrs` and `pong_addrs` (default: ping's and
        pong's port) are the servers of its ping and pong upstreams, in that order."""
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx is None:
            missing("nginx is not installed (Debian: apt-get install nginx-light)")
        assert nginx is not None
        prefix = self.workdir / "nginx"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        (prefix / "tmp").mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        self.gateway_pong_addrs = pong_addrs or [f"127.0.0.1:{self.pong_port}"]
        self._write_gateway_conf(ping_addrs or [f"127.0.0.1:{self.ping_port}"])
        argv = [nginx, "-p", f"{prefix}/", "-e", str(prefix / "logs" / "error.log"), "-c", str(conf),
                "-g", "daemon off;"]
        return self._start("nginx", argv, base_env())

    def _write_gateway_conf(self, ping_addrs: list[str]) -> None:
        text = render_nginx_conf(
            listen=f"127.0.0.1:{self.gateway_port}",
            ping="@PING@",
            pong="@PONG@",
            access_log="logs/access.log",
        )
        text = upstream_servers(text, "@PING@", ping_addrs)
        text = upstream_servers(text, "@PONG@", self.gateway_pong_addrs)
        (self.workdir / "nginx" / "nginx.conf").write_text(text)

    def reload_gateway(self, ping_addrs: list[str]) -> None:
        """Rewrite the gateway's ping upstream and reload nginx (SIGHUP: new workers take the new
        configuration, the old ones finish their requests and exit)."""
        self._write_gateway_conf(ping_addrs)
        self.procs["nginx"].send(signal.SIGHUP)

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        url = {"ping": self.ping_url, "pong": self.pong_url}[name]
        proc = self.procs[name]

        def ready() -> bool:
            assert proc.alive(), f"{name} exited during start-up:\n{proc.log_tail()}"
            return http_status(f"{url}/readyz") == 200

        wait_until(ready, timeout, f"{name} /readyz to answer 200")

    def wait_gateway(self, timeout: float = 30.0) -> None:
        wait_until(lambda: http_status(f"{self.gateway_url}/pong?limit=1") == 200, timeout,
                   "the gateway to answer GET /pong")

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def logs(self) -> str:
        parts = [f"--- {key} ({proc.log_path}) ---\n{proc.log_tail()}" for key, proc in self.procs.items()]
        error_log = self.workdir / "nginx" / "logs" / "error.log"
        if error_log.exists():
            tail = "\n".join(error_log.read_text(errors="replace").splitlines()[-40:])
            parts.append(f"--- nginx error.log ---\n{tail}")
        return "\n".join(parts)

    def stored(self, via_gateway: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """GET /pong?from=newest&limit=N (the newest N), or without `limit` every stored message, oldest first,
        by following the pages' `Link: <...>; rel="next"` (bounded: at most 1,000 pages)."""
        base = self.gateway_url if via_gateway else self.pong_url
        if limit is not None:
            return self._page(f"{base}/pong", {"from": "newest", "limit": str(limit)})[0]
        every: list[dict[str, Any]] = []
        url: str | None = f"{base}/pong"
        for _ in range(1000):
            if url is None:
                return every
            page, url = self._page(url, None)
            every.extend(page)
            if url is not None:
                assert url.startswith("/pong?after="), url
                url = f"{base}{url}"
        raise AssertionError("GET /pong: more than 1,000 pages")

    @staticmethod
    def _page(url: str, params: dict[str, str] | None) -> tuple[list[dict[str, Any]], str | None]:
        response = requests.get(url, params=params, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body, list), body
        return body, response.links.get("next", {}).get("url")


def render_nginx_conf(listen: str, ping: str, pong: str, access_log: str) -> str:
    """deploy/local/nginx.conf.template with its placeholders filled (as scripts/local.sh up does)."""
    text = NGINX_TEMPLATE.read_text()
    for key, value in {"@GATEWAY_LISTEN@": listen, "@PING_ADDR@": ping, "@PONG_ADDR@": pong,
                       "@ACCESS_LOG@": access_log}.items():
        assert key in text, f"{key} missing from {NGINX_TEMPLATE}"
        text = text.replace(key, value)
    return text


def ping_published(ping_url: str) -> float:
    """ping's `pingpong_ping_messages_published_total`, read on its own port (never the gateway)."""
    text = requests.get(f"{ping_url}/metrics", timeout=5).text
    match = re.search(r"^pingpong_ping_messages_published_total (\S+)$", text, re.MULTILINE)
    assert match, "ping exports no published counter"
    return float(match.group(1))


def upstream_servers(text: str, placeholder: str, addrs: list[str]) -> str:
    """`text` (a rendered template) with the upstream line `server PLACEHOLDER <flags>;` repeated
    once per address of `addrs`, in that order, flags kept (the template allows a test this)."""
    line = re.search(rf"^(\s*)server {re.escape(placeholder)}( [^;]*)?;$", text, re.MULTILINE)
    assert line, f"no upstream `server {placeholder}` line"
    servers = "\n".join(f"{line.group(1)}server {a}{line.group(2) or ''};" for a in addrs)
    return text.replace(line.group(0), servers)


class Workers:
    """`count` daemon threads running `self._run(index)` from `with` until `stop` is set; leaving
    the block sets it and joins them, each for at most `join_timeout` seconds. Subclasses keep
    their results under `lock`."""

    def __init__(self, count: int, join_timeout: float) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.join_timeout = join_timeout
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def _run(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=self.join_timeout)

class Loadgen:
    """The `pingpong-loadgen` tools against one broker."""

    def __init__(self, binary: Path, broker: Broker) -> None:
        self.binary = binary
        self.broker = broker

    def run(self, *args: str, stdin: bytes | None = None, check: bool = True) -> dict[str, Any] | None:
        env = base_env()
        env.update(self.broker.env("unused"))
        result = subprocess.run([str(self.binary), *args], input=stdin, capture_output=True,
                                env=env, timeout=60)
        if result.returncode != 0:
            if check:
                raise AssertionError(f"pingpong-loadgen {' '.join(args)} failed: "
                                     f"{result.stderr.decode(errors='replace')}")
            return None
        return json.loads(result.stdout)

    def publish(self, queue: str, body: bytes, content_type: str | None = "application/json",
                message_id: str | None = None) -> None:
        args = ["publish", "--queue", queue]
        if content_type is not None:
            args += ["--content-type", content_type]
        if message_id is not None:
            args += ["--message-id", message_id]
        self.run(*args, stdin=body)

    def depth(self, queue: str) -> int | None:
        """Ready messages in `queue`, None if it does not exist."""
        report = self.run("queue-depth", "--queue", queue, check=False)
        return None if report is None else int(report["messages"])

    def delete(self, *queues: str) -> None:
        self.run("delete-queue", *queues, check=False)


class PrivateBroker:
    """A RabbitMQ node of its own (node name, ports, data and log dirs, no plugins), started from
    the installed rabbitmq-server. Never touches the shared broker."""

    def __init__(self, management: bool = False, env: dict[str, str] | None = None) -> None:
        if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
            missing("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server); "
                    "the fault tests start a private broker node")
        suffix = uuid.uuid4().hex[:8]
        self.node = f"pp-fault-{suffix}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        # Not under pytest's tmp_path: Debian's wrapper runs the node as user `rabbitmq`, which
        # cannot enter pytest's 0700 directories.
        self.dir = Path(tempfile.mkdtemp(prefix=f"pp-fault-{suffix}-"))
        # With `management`: the management API (what the operator's autoscaler reads) on
        # `management_port`.
        self.management_port = free_port() if management else None
        conf = f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
        if self.management_port is not None:
            # Statistics every second (default 5 s): the tests wait for what they read.
            conf += (f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
                     "collect_statistics_interval = 1000\n")
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n" if management else "[].\n")
        (self.dir / "rabbitmq.conf").write_text(conf)
        (self.dir / "rabbitmq-env.conf").write_text("")
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("rabbitmq")
            except KeyError:
                user = None
            if user is not None:
                for path in [self.dir, *self.dir.iterdir()]:
                    os.chown(path, user.pw_uid, user.pw_gid)
        self.log_path = self.dir / "server.out"
        # More of the node's environment (e.g. RABBITMQ_FEATURE_FLAGS for a new node).
        self.extra_env = dict(env or {})
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def address(self) -> Broker:
        return Broker(port=self.port)

    def _env(self) -> dict[str, str]:
        env = base_env()
        env.update({
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> None:
        self.starts += 1
        self.proc = Proc(f"rabbitmq#{self.starts}", ["rabbitmq-server"], self._env(), self.log_path)
        self.proc.start()
        proc = self.proc

        def up() -> bool:
            assert proc.alive(), f"private rabbitmq-server exited:\n{proc.log_tail()}"
            return listening("127.0.0.1", self.port)

        wait_until(up, timeout, f"private RabbitMQ node {self.node} on port {self.port}", 0.2)
        if self.management_port is not None:
            wait_until(lambda: listening("127.0.0.1", self.management_port or 0), timeout,
                       f"the management API of {self.node} on port {self.management_port}", 0.2)

    def ctl(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rabbitmqctl", "-n", self.node, *args], capture_output=True, text=True,
                              env=self._env(), timeout=timeout)

    def stop(self) -> None:
        """Stop the node the clean way (`rabbitmqctl stop`), as an operator would."""
        result = self.ctl("stop")
        assert result.returncode == 0, f"rabbitmqctl stop failed: {result.stderr}"
        if self.proc is not None and self.proc.popen is not None:
            self.proc.popen.wait(timeout=60)
        wait_until(lambda: not listening("127.0.0.1", self.port), 30, "the broker port to close")

    def queues(self) -> dict[str, tuple[int, int]]:
        """{queue: (messages_ready, messages_unacknowledged)} as the broker reports them."""
        result = self.ctl("-q", "list_queues", "name", "messages_ready", "messages_unacknowledged",
                          "--no-table-headers")
        assert result.returncode == 0, f"rabbitmqctl list_queues failed: {result.stderr}"
        table: dict[str, tuple[int, int]] = {}
        for line in result.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                table[parts[0]] = (int(parts[1]), int(parts[2]))
        return table

    def destroy(self) -> None:
        """Stop (clean, then by signal) and remove the data directory."""
        if listening("127.0.0.1", self.port):
            self.ctl("stop", timeout=60)
        pid_file = self.dir / "rabbitmq.pid"
        if pid_file.exists():
            text = pid_file.read_text().strip()
            if text.isdigit() and Path(f"/proc/{text}").exists():
                os.kill(int(text), signal.SIGKILL)
        if self.proc is not None:
            self.proc.stop(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 80) -> str:
        """The tail of the node's console output and of its own log file (where the node logs once
        it has started: connections, queues, shutdown)."""
        if self.proc is None:
            return "(never started)"
        node_log = self.dir / "log" / f"{self.node}.log"
        try:
            tail = "\n".join(node_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            tail = f"(no node log: {error})"
        return f"{self.proc.log_tail(lines)}\n--- {node_log} ---\n{tail}"
