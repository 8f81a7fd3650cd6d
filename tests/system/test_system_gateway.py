"""The local nginx gateway (deploy/local/nginx.conf.template) for real: a refused connect is retried
on the next ping, a POST that reached a server is never replayed, every answer nginx produces
itself carries the services' JSON error body (405 with `Allow`), only the exact paths are routed,
and a trickled body meets ping's 10 s request deadline through the gateway. 127.0.0.1 only,
bounded loops."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from system_helpers import (Proc, Stack, base_env, free_port, missing, ping_published,
                            render_nginx_conf, upstream_servers, wait_until)


def _nginx() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        missing("nginx is not installed (Debian: apt-get install nginx)")
    assert nginx is not None
    return nginx


class Gateway:
    """A second nginx from the template, with the ping upstream's `server` line repeated for
    `ping_addrs` (in that order), in front of the stack's pong."""

    def __init__(self, stack: Stack, workdir: Path, ping_addrs: list[str]) -> None:
        self.port = free_port()
        self.prefix = workdir / "gateway2"
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        text = render_nginx_conf(listen=f"127.0.0.1:{self.port}", ping="@PING@",
                                 pong=f"127.0.0.1:{stack.pong_port}", access_log="off")
        (self.prefix / "nginx.conf").write_text(upstream_servers(text, "@PING@", ping_addrs))
        self.proc = Proc("nginx-2", [_nginx(), "-p", f"{self.prefix}/", "-e",
                                     str(self.prefix / "logs" / "error.log"), "-c",
                                     str(self.prefix / "nginx.conf"), "-g", "daemon off;"],
                         base_env(), workdir / "gateway2.log").start()
        wait_until(lambda: _answers(self.port), 30, "the second gateway to listen")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        return (self.prefix / "logs" / "error.log").read_text(errors="replace")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def gateways(stack: Stack, tmp_path: Path) -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.proc.stop()


def _published(stack: Stack) -> float:
    return ping_published(stack.ping_url)


def test_gateway_retries_a_refused_connect(stack: Stack, tmp_path: Path,
                                           gateways: list[Gateway]) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here: every connect is refused
    gateway = Gateway(stack, tmp_path, [dead, f"127.0.0.1:{stack.ping_port}"])
    gateways.append(gateway)
    before = _published(stack)
    ids = []
    with requests.Session() as session:
        for i in range(40):
            response = session.post(f"{gateway.url}/ping", json={"msg": f"retry {i}"}, timeout=30)
            assert response.status_code == 200, (i, response.status_code, response.text)
            ids.append(response.json()["id"])
    assert len(set(ids)) == 40
    # Each POST was published exactly once: retries went only where nothing had been sent.
    assert _published(stack) - before == 40
    assert "Connection refused" in gateway.error_log(), "the dead server was never tried"


class HangUpServer:
    """Accepts connections, reads a request, then resets the connection without answering: a
    server that got the POST and died before it answered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                if data.startswith(b"POST /ping "):
                    self.requests += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_gateway_never_replays_a_post_that_reached_a_server(stack: Stack, tmp_path: Path,
                                                            gateways: list[Gateway]) -> None:
    hangup = HangUpServer()
    try:
        gateway = Gateway(stack, tmp_path, [hangup.addr, f"127.0.0.1:{stack.ping_port}"])
        gateways.append(gateway)
        before = _published(stack)
        codes: list[int] = []
        with requests.Session() as session:
            for i in range(20):
                response = session.post(f"{gateway.url}/ping", json={"msg": f"once {i}"}, timeout=30)
                codes.append(response.status_code)
                assert response.headers["content-type"] == "application/json", response.text
                json.loads(response.text)
        # The gateway answers an upstream failure (502) with its JSON 503.
        assert set(codes) <= {200, 503}, codes
        # Every POST the hang-up server received was answered 503, not passed on to ping.
        assert hangup.requests >= 1, "the hang-up server was never tried"
        assert codes.count(503) == hangup.requests, (codes, hangup.requests)
        assert _published(stack) - before == codes.count(200)
    finally:
        hangup.close()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(request)
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize(("name", "request_bytes", "status"), [
    ("TRACE", b"TRACE /ping HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("URI of 9 KiB", b"GET /pong?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header of 9 KiB", b"GET /pong HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 400),
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("bad Content-Length", b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ("unknown transfer coding", b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n", 501),
    ("body of 2 MiB", b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 2097152\r\n\r\n", 413),
    ("internal error location", b"GET /.errors/bad_request.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     404),
    ("double slash", b"POST //ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 11\r\nConnection: close\r\n\r\n{\"msg\":\"x\"}", 404),
])
def test_gateway_errors_have_json_bodies(stack: Stack, name: str, request_bytes: bytes,
                                         status: int) -> None:
    answer = _raw(stack.gateway_port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode()
    assert status_line.startswith(f"HTTP/1.1 {status} "), (name, answer[:300])
    assert b"\r\nContent-Type: application/json" in head, (name, head)
    assert isinstance(json.loads(body)["error"], str), (name, body)


@pytest.mark.parametrize(("path", "allow"), [("/ping", "POST"), ("/pong", "GET, HEAD")])
def test_gateway_405_names_the_allowed_methods(stack: Stack, path: str, allow: str) -> None:
    answer = _raw(stack.gateway_port, f"TRACE {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = answer.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 405 "), head
    assert f"\r\nAllow: {allow}\r\n" in head + "\r\n", head


def test_a_trickled_body_meets_the_request_deadline_through_the_gateway(stack: Stack) -> None:
    """One byte every 2 s restarts nginx's body timeout each time; the body is streamed to ping,
    whose deadline (10 s from the headers) answers 408 with a JSON body. Bounded: 30 s."""
    body = json.dumps({"msg": "trickled " + "x" * 40}).encode()
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=30) as conn:
        conn.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        conn.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 30
        sent = 0
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            if sent < len(body) - 1:  # never the last byte: the body stays incomplete
                try:
                    conn.sendall(body[sent:sent + 1])
                    sent += 1
                except OSError:
                    pass
            time.sleep(2)
            try:
                answer += conn.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
        conn.settimeout(5)
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except OSError:
            pass
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"content-type: application/json" in head.lower(), head
    assert "request timed out" in json.loads(rest)["error"], rest
