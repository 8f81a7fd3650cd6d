"""Limits a client cannot break, on the real ping binary with direct connections (no gateway in
front): the header-read timeout, 408 for a body trickled too slowly, hundreds of slow clients while
normal traffic still gets 200s, shutdown not held by half-sent headers, hyper's own parse errors, a
clean exit on a busy port, and readiness that follows failing confirms.
127.0.0.1 only; every loop is bounded in count and time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from system_helpers import (Broker, Loadgen, PrivateBroker, Stack, base_env, http_status,
                            wait_until)

HEADER_TIMEOUT_S = 2
# The slow-clients test opens 400 connections before it counts them: on a loaded 2-core machine
# ping may take a second or more to accept them all, which must not race with the cut.
SLOW_CLIENTS_HEADER_TIMEOUT_S = 6


@pytest.fixture
def bare(tmp_path: Path, bins: dict[str, Path], shared_broker: Broker,
         loadgen: Loadgen) -> Iterator[Stack]:
    """A stack on the shared broker with nothing started."""
    stack = Stack(bins=bins, broker=shared_broker, workdir=tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()
        print(f"\n===== logs (queue {stack.queue}) =====\n{stack.logs()}")
        loadgen.delete(stack.queue, stack.dead_queue)


def _ping(stack: Stack, **env: str) -> None:
    stack.start_ping(env)
    stack.wait_ready("ping")


def _closed_by_peer(conn: socket.socket, within: float) -> bool:
    """True when the server closes `conn` (EOF or reset) within `within` seconds."""
    conn.settimeout(within)
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_half_sent_headers_are_cut(bare: Stack) -> None:
    _ping(bare, HTTP_HEADER_READ_TIMEOUT=str(HEADER_TIMEOUT_S))
    silent = socket.create_connection(("127.0.0.1", bare.ping_port))
    partial = socket.create_connection(("127.0.0.1", bare.ping_port))
    partial.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
    for conn in (silent, partial):
        with conn:
            assert _closed_by_peer(conn, HEADER_TIMEOUT_S + 8), "a connection without a request stays open"


def test_hundreds_of_slow_clients_leave_normal_traffic_alone(bare: Stack) -> None:
    # Above the 400 slow clients: this is about the timeouts, not the connection cap.
    _ping(bare, HTTP_HEADER_READ_TIMEOUT=str(SLOW_CLIENTS_HEADER_TIMEOUT_S), HTTP_MAX_CONNECTIONS="1000")
    pid = bare.procs["ping"].pid
    base_fds = _fds(pid)
    silent = [socket.create_connection(("127.0.0.1", bare.ping_port)) for _ in range(150)]
    partial = [socket.create_connection(("127.0.0.1", bare.ping_port)) for _ in range(150)]
    for conn in partial:
        conn.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Type: app")
    body = json.dumps({"msg": "trickled " + "x" * 200}).encode()
    trickle = [socket.create_connection(("127.0.0.1", bare.ping_port)) for _ in range(100)]
    for conn in trickle:
        conn.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    stop = threading.Event()

    def trickle_bytes() -> None:  # one byte per connection every 0.5 s, for at most 20 s
        deadline = time.monotonic() + 20
        sent = 0
        while not stop.is_set() and time.monotonic() < deadline and sent < len(body):
            for conn in trickle:
                try:
                    conn.sendall(body[sent:sent + 1])
                except OSError:
                    pass
            sent += 1
            stop.wait(0.5)

    thread = threading.Thread(target=trickle_bytes, daemon=True)
    thread.start()
    try:
        # Every slow client is accepted (polled: accepting 400 connections takes ping a moment).
        wait_until(lambda: _fds(pid) >= base_fds + 300, SLOW_CLIENTS_HEADER_TIMEOUT_S - 2,
                   "ping to accept the slow clients")
        # Normal traffic meanwhile: every request succeeds.
        with requests.Session() as session:
            for i in range(40):
                response = session.post(f"{bare.ping_url}/ping", json={"msg": f"normal {i}"}, timeout=10)
                assert response.status_code == 200, (i, response.status_code, response.text)
                time.sleep(0.25)
        # The connections without a complete request were cut by the header timeout.
        for conn in silent + partial:
            assert _closed_by_peer(conn, SLOW_CLIENTS_HEADER_TIMEOUT_S + 8), \
                "a slow client still holds a connection"
        # The trickled bodies ran into the request deadline: 408 with a JSON body, then closed.
        answers = []
        for conn in trickle:
            conn.settimeout(15)
            data = b""
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (ConnectionResetError, TimeoutError):
                pass
            answers.append(data)
        for data in answers:
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), data[:200]
            assert b"content-type: application/json" in head.lower(), head
            assert "request timed out" in json.loads(rest)["error"], rest
        # Nothing is left behind: descriptors back to the baseline, memory bounded.
        wait_until(lambda: _fds(pid) <= base_fds + 5, 10, "ping's descriptors to be released")
        assert _rss_kib(pid) < 64 * 1024, f"ping RSS {_rss_kib(pid)} KiB after 400 slow clients"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in silent + partial + trickle:
            conn.close()


def test_shutdown_is_not_held_by_half_sent_headers(bare: Stack) -> None:
    _ping(bare)  # default header timeout (10 s), as long as the drain timeout
    with socket.create_connection(("127.0.0.1", bare.ping_port)) as partial:
        partial.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        proc = bare.procs["ping"]
        started = time.monotonic()
        proc.send(signal.SIGTERM)
        assert proc.popen is not None
        code = proc.popen.wait(timeout=30)
        took = time.monotonic() - started
    assert code == 0, proc.log_tail()
    # Bound, not a benchmark: the drain (and the header timeout) would be 10 s.
    assert took < 5, f"shutdown waited {took:.1f} s for a connection without a request"


@pytest.mark.parametrize(("name", "request_bytes", "status"), [
    ("URI of 70 KB", b"GET /readyz?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("150 headers", b"GET /readyz HTTP/1.1\r\nHost: x\r\n"
                    + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("bad header", b"GET /readyz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
])
def test_unparseable_requests_get_hypers_answers(bare: Stack, name: str, request_bytes: bytes,
                                                status: int) -> None:
    """hyper answers what it cannot parse itself: the status, an empty body, one `connection:
    close` (the services no longer rewrite hyper's bytes)."""
    _ping(bare)
    with socket.create_connection(("127.0.0.1", bare.ping_port), timeout=15) as conn:
        conn.sendall(request_bytes)
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), (name, data[:200])
    lines = [line.lower() for line in head.split(b"\r\n")[1:]]
    assert lines.count(b"connection: close") == 1, (name, head)
    assert b"content-length: 0" in lines, (name, head)
    assert body == b"", (name, body)


def test_busy_port_is_a_clean_error(bins: dict[str, Path], shared_broker: Broker) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        env = base_env()
        env.update(shared_broker.env("pp-test-busy-port"))
        env.update({"LISTEN_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "info"})
        for run in range(20):
            result = subprocess.run([str(bins["ping"])], env=env, capture_output=True, text=True,
                                    timeout=30)
            output = result.stdout + result.stderr
            assert result.returncode == 1, (run, result.returncode, output)
            assert "panicked" not in output, (run, output)
            assert f"failed to listen on 127.0.0.1:{port}" in output, (run, output)
            assert "Address already in use" in output, (run, output)


def test_readiness_follows_failing_confirms(private_broker: PrivateBroker, tmp_path: Path,
                                            bins: dict[str, Path]) -> None:
    stack = Stack(bins=bins, broker=private_broker.address, workdir=tmp_path)
    pid_file = private_broker.dir / "rabbitmq.pid"
    broker_pid = int(pid_file.read_text().strip())
    try:
        _ping(stack)
        assert requests.post(f"{stack.ping_url}/ping", json={"msg": "before"}, timeout=10).status_code == 200
        # Frozen, not closed: the TCP connection stays up, confirms stop (as in a network partition).
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            codes: list[int] = []

            def post(i: int) -> None:
                codes.append(requests.post(f"{stack.ping_url}/ping", json={"msg": f"lost {i}"},
                                           timeout=30).status_code)

            threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert codes == [503] * 4, codes
            # Well before the AMQP heartbeat would notice, /readyz says not ready.
            response = requests.get(f"{stack.ping_url}/readyz", timeout=5)
            assert response.status_code == 503, response.text
            assert response.json()["failing"] == ["broker"]
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        # The broker answers again: a confirmed publish (or a new connection) makes it ready.
        def recovered() -> bool:
            if http_status(f"{stack.ping_url}/readyz") == 200:
                return True
            requests.post(f"{stack.ping_url}/ping", json={"msg": "probe"}, timeout=10)
            return False

        wait_until(recovered, 60, "ping to be ready again", interval=0.5)
    finally:
        stack.stop_all()
        if pid_file.exists() and Path(f"/proc/{broker_pid}").exists():
            os.kill(broker_pid, signal.SIGCONT)


SLOW_READERS = 48
CONNECTION_CAP = 16


def test_slow_readers_are_cut_and_pong_stays_bounded(bare: Stack) -> None:
    """Clients that ask for a 1 MiB page and never read it: pong serves at most
    HTTP_MAX_CONNECTIONS of them at once (the rest wait in the listen backlog), cuts each one when
    its response is not written within HTTP_WRITE_TIMEOUT, and gives the memory and descriptors
    back. Bounded: every wait has a limit; nothing is timed."""
    _ping(bare)
    bare.start_pong({"HTTP_WRITE_TIMEOUT": "2", "HTTP_MAX_CONNECTIONS": str(CONNECTION_CAP)})
    bare.wait_ready("pong")
    text = "x" * 60_000
    with requests.Session() as session:
        for i in range(20):
            response = session.post(f"{bare.ping_url}/ping", json={"msg": f"{i} {text}"}, timeout=10)
            assert response.status_code == 200, response.text
    wait_until(lambda: len(bare.stored()) == 20, 30, "pong to store the 20 messages")
    pid = bare.procs["pong"].pid
    base_fds = _fds(pid)
    base_rss = _rss_kib(pid)
    readers = []
    for _ in range(SLOW_READERS):
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.connect(("127.0.0.1", bare.pong_port))
        conn.sendall(b"GET /pong HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(conn)
    peak = {"fds": 0, "rss": 0}

    def sample() -> int:
        fds = _fds(pid)
        peak["fds"] = max(peak["fds"], fds)
        peak["rss"] = max(peak["rss"], _rss_kib(pid))
        return fds

    try:
        # (The baseline may still count a closing connection of the GETs above.)
        wait_until(lambda: sample() >= base_fds + CONNECTION_CAP // 2, 20, "pong to take slow readers")
        # Every reader is served in turn and cut, though none has read a byte.
        wait_until(lambda: sample() <= base_fds + 1 and peak["fds"] > 0 and _all_taken(readers), 90,
                   "pong to cut every slow reader")
        print(f"pong: base fds {base_fds}, RSS {base_rss} KiB; peak {peak}")
        assert peak["fds"] <= base_fds + CONNECTION_CAP + 2, (peak, base_fds)
        # Memory follows: at most the pages of the connections it serves at once.
        assert peak["rss"] <= base_rss + CONNECTION_CAP * 2 * 1024 + 32 * 1024, (peak, base_rss)
        for conn in readers:
            received, complete = _drain(conn)
            assert not complete, f"a slow reader got its whole page ({received} bytes): not cut"
    finally:
        for conn in readers:
            conn.close()


def _all_taken(readers: list[socket.socket]) -> bool:
    """True once pong has accepted every reader (each has data waiting or was closed)."""
    return all(_has_input(conn) for conn in readers)


def _has_input(conn: socket.socket) -> bool:
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True


def _drain(conn: socket.socket) -> tuple[int, bool]:
    """Reads what the server left (bounded); (bytes of body received, whether it was complete)."""
    conn.settimeout(10)
    data = b""
    try:
        while chunk := conn.recv(1 << 20):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), None)
    return len(body), length is not None and len(body) >= length
