"""Bad input, end to end: malformed HTTP requests through the nginx gateway, and malformed
messages published straight into the queue. Each table row names its expected outcome; a row
that does not behave is reported with all the others at once."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import requests

from system_helpers import Loadgen, Stack, http_status, wait_until

JSON = "application/json"
LIMIT = 64 * 1024


@dataclass(frozen=True)
class BadRequest:
    name: str
    method: str
    path: str
    body: bytes | None
    content_type: str | None
    status: int


def _msg_body(size: int) -> bytes:
    """A valid `{"msg": "xxx..."}` document of exactly `size` bytes."""
    overhead = len(b'{"msg":""}')
    return b'{"msg":"' + b"x" * (size - overhead) + b'"}'


BAD_REQUESTS = [
    BadRequest("malformed JSON", "POST", "/ping", b'{"msg": ', JSON, 400),
    BadRequest("not JSON at all", "POST", "/ping", b"hello", JSON, 400),
    BadRequest("trailing garbage", "POST", "/ping", b'{"msg": "a"} x', JSON, 400),
    BadRequest("invalid UTF-8", "POST", "/ping", b'{"msg": "\xff\xfe"}', JSON, 400),
    BadRequest("empty body", "POST", "/ping", b"", JSON, 400),
    BadRequest("JSON array", "POST", "/ping", b'["msg"]', JSON, 422),
    BadRequest("JSON string", "POST", "/ping", b'"msg"', JSON, 422),
    BadRequest("missing msg", "POST", "/ping", b'{"text": "a"}', JSON, 422),
    BadRequest("msg is a number", "POST", "/ping", b'{"msg": 5}', JSON, 422),
    BadRequest("msg is null", "POST", "/ping", b'{"msg": null}', JSON, 422),
    BadRequest("msg is an object", "POST", "/ping", b'{"msg": {"a": 1}}', JSON, 422),
    BadRequest("empty msg", "POST", "/ping", b'{"msg": ""}', JSON, 422),
    BadRequest("NUL in msg (no store can keep it)", "POST", "/ping", b'{"msg": "a\\u0000b"}', JSON, 422),
    BadRequest("text/plain", "POST", "/ping", b'{"msg": "a"}', "text/plain", 415),
    BadRequest("form encoded", "POST", "/ping", b"msg=a", "application/x-www-form-urlencoded", 415),
    BadRequest("no content type", "POST", "/ping", b'{"msg": "a"}', None, 415),
    BadRequest("body 1 byte over 64 KiB (ping refuses)", "POST", "/ping", _msg_body(LIMIT + 1), JSON, 413),
    BadRequest("body of 2 MiB (gateway refuses)", "POST", "/ping", _msg_body(2 * 1024 * 1024), JSON, 413),
    BadRequest("GET /ping", "GET", "/ping", None, None, 405),
    BadRequest("DELETE /pong", "DELETE", "/pong", None, None, 405),
    BadRequest("limit is not a number", "GET", "/pong?limit=abc", None, None, 400),
    BadRequest("limit is negative", "GET", "/pong?limit=-1", None, None, 400),
    BadRequest("limit overflows", "GET", "/pong?limit=99999999999999999999999", None, None, 400),
    BadRequest("limit over the maximum page", "GET", "/pong?limit=1001", None, None, 400),
    BadRequest("metrics are not public", "GET", "/metrics", None, None, 404),
    BadRequest("unknown path", "POST", "/pings", b'{"msg": "a"}', JSON, 404),
]


def test_malformed_requests_through_the_gateway(stack: Stack) -> None:
    session = requests.Session()
    problems = []
    for case in BAD_REQUESTS:
        headers = {"Content-Type": case.content_type} if case.content_type else {}
        response = session.request(case.method, f"{stack.gateway_url}{case.path}", data=case.body,
                                   headers=headers, timeout=30)
        if response.status_code != case.status:
            problems.append(f"{case.name}: expected {case.status}, got {response.status_code} "
                            f"{response.text[:120]!r}")
            continue
        content_type = response.headers.get("Content-Type", "")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not content_type.startswith(JSON) or not isinstance(body, dict) \
                or not isinstance(body.get("error"), str) or not body["error"]:
            problems.append(f"{case.name}: not a JSON error body: {content_type} {response.text[:120]!r}")
    assert not problems, "\n".join(problems)

    # Positive controls: the same paths work, a 64 KiB body is still accepted...
    for body in (b'{"msg": "control"}', _msg_body(LIMIT)):
        response = session.post(f"{stack.gateway_url}/ping", data=body,
                                headers={"Content-Type": "application/json; charset=utf-8"}, timeout=30)
        assert response.status_code == 200, response.text[:200]
    # ...and none of the bad requests published anything.
    stored = wait_until(lambda: (s := stack.stored()) and len(s) >= 2 and s, 30, "the 2 controls")
    assert [m["msg"][:7] for m in stored] == ["control", "xxxxxxx"], [m["msg"][:20] for m in stored]
    for name in ("ping", "pong"):
        assert stack.procs[name].alive(), f"{name} died"


@dataclass(frozen=True)
class QueueCase:
    name: str
    body: bytes
    outcome: str  # "dead": dead-lettered; "stored": in GET /pong; "duplicate": acked, stored once


def _wire(id_: str | None = None, msg: object = "ok", created_at: object = "2024-05-01T12:00:00Z",
          drop: str | None = None) -> bytes:
    doc = {"id": id_ or str(uuid.uuid4()), "msg": msg, "created_at": created_at}
    if drop:
        del doc[drop]
    return json.dumps(doc).encode()


VALID_ID = str(uuid.uuid4())
QUEUE_CASES = [
    QueueCase("empty body", b"", "dead"),
    QueueCase("not JSON", b"hello", "dead"),
    QueueCase("JSON array", b"[1, 2]", "dead"),
    QueueCase("JSON null", b"null", "dead"),
    QueueCase("invalid UTF-8", b'{"id": "\xff", "msg": "x"}', "dead"),
    QueueCase("missing id", _wire(drop="id"), "dead"),
    QueueCase("missing msg", _wire(drop="msg"), "dead"),
    QueueCase("missing created_at", _wire(drop="created_at"), "dead"),
    QueueCase("id is not a UUID", _wire(id_="not-a-uuid"), "dead"),
    QueueCase("msg is a number", _wire(msg=42), "dead"),
    QueueCase("empty msg", _wire(msg=""), "dead"),
    QueueCase("NUL in msg", _wire(msg="a\u0000b"), "dead"),
    QueueCase("created_at is not RFC 3339", _wire(created_at="yesterday"), "dead"),
    QueueCase("body over 256 KiB", _wire(msg="y" * (300 * 1024)), "dead"),
    QueueCase("valid message (control)", _wire(id_=VALID_ID, msg="valid"), "stored"),
    QueueCase("same id again", _wire(id_=VALID_ID, msg="valid"), "duplicate"),
]


def test_malformed_queue_messages_are_dead_lettered(stack: Stack, loadgen: Loadgen) -> None:
    problems = []
    dead = 0
    assert loadgen.depth(stack.dead_queue) == 0, "the dead-letter queue is not declared or not empty"
    for case in QUEUE_CASES:
        loadgen.publish(stack.queue, case.body)
        expected_dead = dead + (case.outcome == "dead")
        try:
            # The work queue drains, and the dead-letter queue holds exactly the rejected ones.
            wait_until(lambda: loadgen.depth(stack.queue) == 0
                       and loadgen.depth(stack.dead_queue) == expected_dead, 20,
                       f"'{case.name}' to be consumed", 0.1)
        except AssertionError as error:
            problems.append(f"{case.name}: {error}; dead-letter depth "
                            f"{loadgen.depth(stack.dead_queue)}, expected {expected_dead}")
        dead = loadgen.depth(stack.dead_queue) or 0
        if http_status(f"{stack.pong_url}/readyz") != 200 or not stack.procs["pong"].alive():
            problems.append(f"{case.name}: pong is no longer ready")
    stored = stack.stored()
    if [m["id"] for m in stored] != [VALID_ID]:
        problems.append(f"pong stored {[(m['id'], m['msg'][:20]) for m in stored]}, "
                        f"expected only the valid control {VALID_ID} once")
    assert not problems, "\n".join(problems)

    # pong still consumes normally afterwards.
    response = requests.post(f"{stack.gateway_url}/ping", json={"msg": "after"}, timeout=30)
    assert response.status_code == 200, response.text
    wait_until(lambda: response.json()["id"] in {m["id"] for m in stack.stored()}, 30,
               "a ping sent after the bad messages to be stored")
    metrics = requests.get(f"{stack.pong_url}/metrics", timeout=10).text
    dead_lines = [line for line in metrics.splitlines()
                  if line.startswith("pingpong_pong_") and "dead" in line and not line.startswith("#")]
    total = sum(float(line.rsplit(" ", 1)[1]) for line in dead_lines)
    assert total == sum(c.outcome == "dead" for c in QUEUE_CASES), dead_lines
