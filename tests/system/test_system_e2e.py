"""End to end through the nginx gateway (deploy/local/nginx.conf.template) with the real ping, pong
and the shared RabbitMQ: every confirmed ping is delivered exactly once, and the gateway exposes
only the public API."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import requests

from system_helpers import Broker, Stack, free_port, http_status, wait_until

# The gateway's own 503 body (deploy/local/nginx.conf.template, location @unavailable).
GATEWAY_503 = "service unavailable"
REQUESTS = 1000
THREADS = 32


def _parse_time(text: str) -> datetime:
    # RFC 3339 from the services; Python < 3.11 does not take 'Z' or nanoseconds.
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, tail = text.split(".", 1)
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text)


def test_concurrent_pings_through_the_gateway_are_each_stored_once(stack: Stack) -> None:
    local = threading.local()

    def send(i: int) -> tuple[str, requests.Response]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        msg = f"e2e-{i}-{uuid.uuid4().hex[:6]}"
        return msg, session.post(f"{stack.gateway_url}/ping", json={"msg": msg}, timeout=30)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(send, range(REQUESTS)))

    bad = [(msg, r.status_code, r.text[:200]) for msg, r in results if r.status_code != 200]
    assert not bad, f"{len(bad)} of {REQUESTS} pings were not 200, e.g. {bad[:5]}"
    sent: dict[str, str] = {}
    for msg, response in results:
        body = response.json()
        assert set(body) == {"id", "message", "content"}, body
        assert body["content"] == msg
        assert body["message"].startswith("Created at "), body
        _parse_time(body["message"].removeprefix("Created at "))
        assert str(uuid.UUID(body["id"])) == body["id"]
        sent[body["id"]] = msg
    assert len(sent) == REQUESTS, "ping returned duplicate ids"

    def all_stored() -> list[dict[str, object]] | None:
        stored = stack.stored(via_gateway=True)
        return stored if sent.keys() <= {m["id"] for m in stored} else None

    stored = wait_until(all_stored, 60, f"all {REQUESTS} confirmed ids in GET /pong", 0.2)
    ids = [m["id"] for m in stored]
    assert len(ids) == len(set(ids)) == REQUESTS, "GET /pong holds duplicates or foreign messages"
    for message in stored:
        assert set(message) == {"id", "msg", "created_at", "received_at"}, message
        assert message["msg"] == sent[message["id"]]
        assert _parse_time(message["received_at"]) >= _parse_time(message["created_at"])
    created = [_parse_time(m["created_at"]) for m in stored]
    received = [_parse_time(m["received_at"]) for m in stored]
    assert received == sorted(received), "GET /pong is not oldest first"
    assert len(created) == REQUESTS


def test_pong_limit_returns_the_newest_through_the_gateway(stack: Stack) -> None:
    ids = []
    for i in range(5):
        response = requests.post(f"{stack.gateway_url}/ping", json={"msg": f"limit-{i}"}, timeout=30)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    wait_until(lambda: len(stack.stored(via_gateway=True)) == 5, 30, "5 stored messages")
    assert [m["id"] for m in stack.stored(via_gateway=True)] == ids
    assert [m["id"] for m in stack.stored(via_gateway=True, limit=2)] == ids[-2:]
    assert stack.stored(via_gateway=True, limit=0) == []
    assert [m["id"] for m in stack.stored(via_gateway=True, limit=100)] == ids


def test_gateway_exposes_only_the_public_api(stack: Stack) -> None:
    for path in ("/metrics", "/healthz", "/readyz", "/ping/extra", "/pong/", "/", "/api/ping"):
        response = requests.get(f"{stack.gateway_url}{path}", timeout=10)
        assert response.status_code == 404, (path, response.status_code)
        assert response.headers["Content-Type"].startswith("application/json"), path
        assert response.json()["error"], path
    # ...while the services themselves serve them (on ports the gateway does not publish).
    for base in (stack.ping_url, stack.pong_url):
        assert http_status(f"{base}/healthz") == 200
        assert http_status(f"{base}/readyz") == 200
        metrics = requests.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "pingpong_" in metrics.text


def test_gateway_answers_json_503_when_the_broker_or_a_service_is_down(
        request: pytest.FixtureRequest, tmp_path: Path, bins: dict[str, Path]) -> None:
    # ping runs but its broker port is closed; pong is not running at all.
    stack = Stack(bins=bins, broker=Broker(port=free_port()), workdir=tmp_path)
    try:
        stack.start_ping()
        stack.start_gateway()
        wait_until(lambda: http_status(f"{stack.ping_url}/healthz") == 200, 30, "ping to listen")
        wait_until(lambda: http_status(f"{stack.gateway_url}/ping") is not None, 30, "nginx to listen")
        assert http_status(f"{stack.ping_url}/readyz") == 503

        # ping's own 503 passes through the gateway unchanged (body and Retry-After).
        response = requests.post(f"{stack.gateway_url}/ping", json={"msg": "x"}, timeout=30)
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After"), response.headers
        assert response.json()["error"] not in ("", GATEWAY_503), "the gateway replaced ping's answer"

        # pong unreachable: nginx answers 503 itself, in the same JSON shape.
        response = requests.get(f"{stack.gateway_url}/pong", timeout=30)
        assert response.status_code == 503, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers.get("Retry-After"), response.headers
        assert response.json()["error"] == GATEWAY_503
    finally:
        stack.stop_all()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(stack.logs())
