"""A private three-node RabbitMQ cluster for the HA system tests, a private PostgreSQL server and
a bounded load client.

Each node is a `PrivateBroker` (system_helpers) with its own node name, AMQP and distribution
ports, data, log and config files; the nodes share the Erlang cookie of the `rabbitmq` user (the
Debian wrapper runs every node and every `rabbitmqctl` as that user, HOME=/var/lib/rabbitmq), so
they can cluster. The shared broker on 5672 is never touched. Nodes are stopped by pid (the
node's own pid file), never by name.

The module name is unique across tests/ (see tests/deploy/conftest.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from typing import Any

import requests

from system_helpers import (Broker, PrivateBroker, Stack, Workers, free_port, listening, missing,
                            wait_until)

# Upper bound the HA tests document for one request while a node fails: ping's confirm timeout
# (5 s) plus slack for a loaded 2-core machine. A request without an answer by then is a hang.
CLIENT_TIMEOUT = 12.0
# Issue 19's bounds: after a node is killed, ping answers 200 again and pong stores again within
# RECOVERY_BOUND seconds; no request takes longer than SLOWEST_BOUND seconds.
RECOVERY_BOUND = 5.0
SLOWEST_BOUND = 10.0


class ClusterNode(PrivateBroker):
    """One node of the cluster: a PrivateBroker with a cluster-friendly config."""

    def __init__(self, run: str, index: int) -> None:
        super().__init__()
        self.index = index
        self.node = f"pp-ha{index}-{run}@localhost"

    def kill9(self) -> None:
        """SIGKILL the node's Erlang VM (a crash: nothing is flushed or handed over)."""
        pid = self.beam_pid()
        assert pid is not None, f"node {self.node} has no live pid"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, f"node {self.node} to die")
        if self.proc is not None and self.proc.popen is not None:
            self.proc.popen.wait(timeout=30)
        wait_until(lambda: not listening("127.0.0.1", self.port), 30, "the node's AMQP port to close")

    def beam_pid(self) -> int | None:
        pid_file = self.dir / "rabbitmq.pid"
        if not pid_file.exists():
            return None
        text = pid_file.read_text().strip()
        return int(text) if text.isdigit() and Path(f"/proc/{text}").exists() else None

    def wait_booted(self, timeout: float = 120.0) -> None:
        """Until the node runs the rabbit application (the port alone can be early)."""
        result = self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 30)
        assert result.returncode == 0, f"{self.node} did not boot: {result.stderr}\n{self.log_tail()}"


@dataclass
class BrokerCluster:
    """Three clustered nodes; `addresses(order)` is a RABBITMQ_ADDRESSES value."""

    size: int = 3
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    nodes: list[ClusterNode] = field(default_factory=list)

    def start(self) -> None:
        self.nodes = [ClusterNode(self.run, i) for i in range(self.size)]
        errors: list[BaseException] = []

        def boot(node: ClusterNode) -> None:
            try:
                node.start()
                node.wait_booted()
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=boot, args=(n,)) for n in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        if errors:
            raise errors[0]
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            for args in (("stop_app",), ("join_cluster", seed.node), ("start_app",)):
                result = node.ctl(*args)
                assert result.returncode == 0, f"{node.node} {' '.join(args)}: {result.stderr}"
        wait_until(lambda: self.running_nodes() == {n.node for n in self.nodes}, 60,
                   "all three nodes running in one cluster", 1.0)

    def running_nodes(self) -> set[str]:
        for node in self.nodes:
            if not listening("127.0.0.1", node.port):
                continue
            result = node.ctl("eval", "rabbit_nodes:all_running().", timeout=30)
            if result.returncode == 0:
                text = result.stdout.strip().strip("[]")
                return {part.strip().strip("'") for part in text.split(",") if part.strip()}
        return set()

    def addresses(self, order: list[int]) -> str:
        return ",".join(f"127.0.0.1:{self.nodes[i].port}" for i in order)

    def broker(self, first: int = 0) -> Broker:
        return Broker(port=self.nodes[first].port)

    def alive(self) -> list[ClusterNode]:
        return [n for n in self.nodes if listening("127.0.0.1", n.port)]

    def leader(self, queue: str) -> ClusterNode:
        """The node that holds the quorum queue's leader, as a running node reports it."""
        for node in self.alive():
            result = node.ctl("-q", "list_queues", "name", "leader", "--no-table-headers", timeout=30)
            if result.returncode != 0:
                continue
            for line in result.stdout.splitlines():
                parts = line.split("\t")
                if len(parts) == 2 and parts[0] == queue:
                    for candidate in self.nodes:
                        if candidate.node == parts[1].strip():
                            return candidate
        raise AssertionError(f"no running node reports a leader for {queue}")

    def queue_info(self, queue: str) -> dict[str, str]:
        """type, messages and members of `queue`, as a running node reports them."""
        keys = ["type", "messages", "members", "arguments"]
        for node in self.alive():
            result = node.ctl("-q", "list_queues", "name", *keys, "--no-table-headers", timeout=30)
            if result.returncode != 0:
                continue
            for line in result.stdout.splitlines():
                parts = line.split("\t")
                if parts and parts[0] == queue:
                    return dict(zip(keys, parts[1:]))
        raise AssertionError(f"no running node lists {queue}")

    def await_quorum_plus_one(self, node: ClusterNode, timeout: int = 120) -> None:
        """What a quorum-aware rolling restart checks before it stops `node`."""
        result = subprocess.run(["rabbitmq-upgrade", "-n", node.node, "await_online_quorum_plus_one",
                                 "-t", str(timeout)], capture_output=True, text=True, env=node._env(),
                                timeout=timeout + 30)
        assert result.returncode == 0, f"await_online_quorum_plus_one on {node.node}: {result.stderr}"

    def logs(self) -> str:
        return "\n".join(f"--- node {n.node} ({n.log_path}) ---\n{n.log_tail()}" for n in self.nodes)

    def destroy(self) -> None:
        for node in self.nodes:
            try:
                node.destroy()
            except Exception as error:  # noqa: BLE001 - keep tearing the others down
                print(f"tearing down {node.node}: {error}")


@dataclass
class Outcome:
    msg: str
    status: int | None  # None: no HTTP answer within CLIENT_TIMEOUT
    started: float
    ended: float
    id: str | None = None


class Load(Workers):
    """`workers` threads POSTing unique messages to ping back to back; at most `limit` requests
    and `seconds` of wall time. Every outcome is kept with its start and end time."""

    def __init__(self, url: str, tag: str, workers: int = 8, limit: int = 200_000,
                 seconds: float = 240.0) -> None:
        super().__init__(workers, CLIENT_TIMEOUT + 5)
        self.url = url
        self.tag = tag
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.outcomes: list[Outcome] = []
        self.sent = 0

    def _next(self) -> int | None:
        with self.lock:
            if self.stop.is_set() or self.sent >= self.limit or time.monotonic() > self.deadline:
                return None
            self.sent += 1
            return self.sent

    def _run(self, worker: int) -> None:
        session = requests.Session()
        while (n := self._next()) is not None:
            msg = f"{self.tag}-{worker}-{n}"
            started = time.monotonic()
            try:
                response = session.post(self.url, json={"msg": msg}, timeout=CLIENT_TIMEOUT)
                outcome = Outcome(msg, response.status_code, started, time.monotonic())
                if response.status_code == 200:
                    outcome.id = response.json()["id"]
            except requests.RequestException:
                outcome = Outcome(msg, None, started, time.monotonic())
                session = requests.Session()
            with self.lock:
                self.outcomes.append(outcome)
            if outcome.status != 200:
                time.sleep(0.05)  # no busy loop against an unavailable service

    def count(self, status: int | None, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for o in self.outcomes if o.status == status and o.started >= since)

    def first_200_since(self, since: float) -> Outcome | None:
        """The earliest-answered 200 among the requests sent at or after `since`."""
        with self.lock:
            answered = [o for o in self.outcomes if o.status == 200 and o.started >= since]
        return min(answered, key=lambda o: o.ended, default=None)

    def slowest(self) -> float:
        with self.lock:
            return max((o.ended - o.started for o in self.outcomes), default=0.0)

    def longest_unavailability(self) -> float:
        """Longest stretch between two 200 answers (by answer time), in seconds."""
        with self.lock:
            ends = sorted(o.ended for o in self.outcomes if o.status == 200)
        return max((b - a for a, b in zip(ends, ends[1:])), default=0.0)


def verify(stack: Stack, load: Load, what: str, pong_port: int | None = None) -> None:
    """Every 200 stored exactly once, nothing but 200/503, no hang; print the report line."""
    outcomes = load.outcomes
    hung = [o for o in outcomes if o.status is None]
    unexpected = [o for o in outcomes if o.status not in (200, 503, None)]
    confirmed = {o.id: o.msg for o in outcomes if o.status == 200}
    assert len(confirmed) == sum(o.status == 200 for o in outcomes), "ping returned a duplicate id"
    # The pong to read (another replica of the same store when given), every page of GET /pong.
    reader = stack if pong_port is None else replace(stack, pong_port=pong_port)

    def stored_now() -> list[dict[str, Any]]:
        return reader.stored()

    def all_stored() -> list[dict[str, Any]] | None:
        stored = stored_now()
        return stored if confirmed.keys() <= {m["id"] for m in stored} else None

    try:
        stored = wait_until(all_stored, 120, "every ping answered 200 to be in GET /pong", 0.5)
    except AssertionError:
        stored = stored_now()
    ids = [m["id"] for m in stored]
    have = set(ids)
    lost = [(i, m) for i, m in confirmed.items() if i not in have]
    report = (f"{what}: accepted {len(confirmed)}, stored {len(ids)}, lost {len(lost)}, "
              f"503s {load.count(503)}, no answer {len(hung)}, "
              f"longest unavailability {load.longest_unavailability():.2f}s, "
              f"slowest answer {max((o.ended - o.started for o in outcomes), default=0.0):.2f}s")
    print(report)
    assert not lost, f"{report}; lost: {lost[:10]}"
    assert len(ids) == len(set(ids)), f"{report}; GET /pong holds a message twice"
    by_id = {m["id"]: m["msg"] for m in stored}
    assert all(by_id[i] == msg for i, msg in confirmed.items()), "a stored message has another text"
    assert not hung, f"{report}; {len(hung)} requests got no answer within {CLIENT_TIMEOUT}s"
    assert not unexpected, f"{report}; statuses other than 200/503: {unexpected[:5]}"


def is_stored(pong_url: str, message_id: str) -> bool:
    """Whether pong stores `message_id`: `GET /pong?after=<id>&limit=0` is 200 for a stored id and
    404 for an unknown one."""
    try:
        response = requests.get(f"{pong_url}/pong", params={"after": message_id, "limit": "0"},
                                timeout=5)
    except requests.RequestException:
        return False
    assert response.status_code in (200, 404, 503), f"GET /pong?after=: {response.status_code}"
    return response.status_code == 200


@dataclass
class Recovery:
    """How long after `since` (a kill, or a node's return) ping answered 200 to a request sent
    after it, and pong had stored that message."""

    what: str
    ping_after: float
    pong_after: float

    def __str__(self) -> str:
        return f"{self.what}: ping 200 after {self.ping_after:.2f}s, pong stored after {self.pong_after:.2f}s"


def measure_recovery(load: Load, pong_url: str, since: float, what: str,
                     patience: float = 60.0) -> Recovery:
    """Waits (up to `patience` s, so a slow recovery is measured rather than cut off) for the first
    200 to a request sent after `since`, then until pong stores that message."""
    first = wait_until(lambda: load.first_200_since(since), patience,
                       f"ping to answer 200 after {what}", 0.02)
    assert first.id is not None
    wait_until(lambda: is_stored(pong_url, first.id or ""), patience,
               f"pong to store the first ping accepted after {what}", 0.05)
    return Recovery(what, first.ended - since, time.monotonic() - since)


def wait_for_200s(load: Load, count: int, since: float, what: str, timeout: float = 90) -> None:
    wait_until(lambda: sum(1 for o in load.outcomes if o.status == 200 and o.ended >= since) >= count,
               timeout, what, 0.1)


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory, trust auth for
    127.0.0.1, a free port), from the installed server binaries. The shared server is never
    touched. As root it runs as the `postgres` user, which the server requires."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        initdb = shutil.which("initdb") or (str(bins[-1]) if bins else None)
        if initdb is None:
            missing("the PostgreSQL server is not installed (Debian: apt-get install postgresql); "
                    "the HA store test starts a private server")
        assert initdb is not None
        self.bin = Path(initdb).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pp-ha-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres"
        self.run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.run_as = pwd.getpwnam("postgres")
            os.chown(self.dir, self.run_as.pw_uid, self.run_as.pw_gid)

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        def demote() -> None:
            if self.run_as is not None:
                os.setgid(self.run_as.pw_gid)
                os.setuid(self.run_as.pw_uid)

        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              preexec_fn=demote, cwd=self.dir)

    def start(self) -> None:
        init = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
                         "--auth=trust", "--no-sync")
        assert init.returncode == 0, f"initdb failed: {init.stderr}"
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                            str(self.dir / "server.log"), "-o", options, "-w", "-t", "60", "start",
                            timeout=90)
        assert started.returncode == 0, f"pg_ctl start failed: {started.stderr}\n{self.log_tail()}"

    def create_database(self, name: str) -> str:
        psql = str(self.bin / "psql") if (self.bin / "psql").exists() else "psql"
        created = self._run(psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                            "-d", "postgres", "-qc", f"CREATE DATABASE {name}")
        assert created.returncode == 0, f"CREATE DATABASE failed: {created.stderr}"
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{name}"

    def log_tail(self) -> str:
        try:
            return "\n".join((self.dir / "server.log").read_text(errors="replace").splitlines()[-40:])
        except OSError as error:
            return f"(no log: {error})"

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
