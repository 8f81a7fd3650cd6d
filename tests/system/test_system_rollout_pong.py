"""Rolling pong (two replicas on one PostgreSQL store) behind the real nginx gateway under load:
every `GET /pong` through the gateway answers 200, and every ping answered 200 is stored exactly
once.

What Kubernetes does on a rollout of pong's Deployment (maxUnavailable 0): it starts a new pod and
waits until it is ready, then deletes an old one: the kubelet runs the preStop hook (the operator
gives pong a `sleep` of 5 s) and sends SIGTERM. pong then stops taking deliveries, stores and
acknowledges or abandons its batch (an unacknowledged delivery goes back to the queue and the other
replica takes it), closes its listener and drains its requests.

What the host models, with the real `ping`/`pong` binaries, the shared broker, a PostgreSQL server
of the test's own and nginx from the shipped template (only its pong `server` line repeated per
address, as the template allows): three "pod addresses" in the pong upstream, pong running on two
of them. The endpoint removal is not modelled: nginx keeps sending GETs to a terminating pong until
its listener is closed, the worst case of a real cluster, and retries a refused connect on the next
address (`proxy_next_upstream error`; a GET is also retried when its connection failed after it was
sent). A roll starts the new pong on the free address, waits for its `/readyz` and until the gateway
sends it GETs, models the preStop and SIGTERMs the oldest pong, which must exit 0.

Load: `Load` threads POST unique messages to ping directly (ping is not rolled); reader threads GET
`/pong?limit=20` through the gateway on keep-alive connections. Bounded: ROLLS rolls, every wait
with a deadline, the load at most 240 s. Timings are printed, never asserted. 127.0.0.1 only.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from pathlib import Path
import requests

from broker_cluster import CLIENT_TIMEOUT, Load, PrivatePostgres, verify, wait_for_200s
from system_helpers import Proc, Stack, Workers, free_port, http_status, wait_until

ROLLS = 4
READERS = 4
PRE_STOP_SECONDS = 1.0


class Readers(Workers):
    """Threads that GET /pong?limit=20 through the gateway back to back, each on its own keep-alive
    session, counting the answers by status (None: no HTTP answer)."""

    def __init__(self, url: str) -> None:
        super().__init__(READERS, CLIENT_TIMEOUT + 5)
        self.url = url
        self.statuses: Counter[int | None] = Counter()

    def _run(self, index: int) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                status: int | None = session.get(self.url, params={"limit": "20"},
                                                 timeout=CLIENT_TIMEOUT).status_code
            except requests.RequestException:
                status = None
                session = requests.Session()
            with self.lock:
                self.statuses[status] += 1
            time.sleep(0.01)

    def counts(self) -> dict[int | None, int]:
        with self.lock:
            return dict(self.statuses)


def pong_gets(port: int) -> float:
    """GET /pong requests pong on `port` has answered (its own metrics, never the gateway)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    pattern = r'^pingpong_pong_http_requests_total\{([^}]*)\} (\S+)$'
    return sum(float(value) for labels, value in re.findall(pattern, text, re.MULTILINE)
               if 'method="GET"' in labels and 'route="/pong"' in labels)


def test_rolling_pong_under_load_serves_every_get_and_stores_every_ping_once(
        empty_stack: Stack, private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    stack = empty_stack
    store = {"PONG_STORE": "postgres",
             "DATABASE_URL": private_postgres.create_database(f"pp_roll_{uuid.uuid4().hex[:10]}")}
    slots = [free_port() for _ in range(3)]

    def start_pong(port: int) -> Proc:
        proc = stack._start("pong", [str(stack.bins["pong"])], stack.service_env(port, store))

        def ready() -> bool:
            assert proc.alive(), f"pong on {port} exited during start-up:\n{proc.log_tail()}"
            return http_status(f"http://127.0.0.1:{port}/readyz") == 200

        wait_until(ready, 60, f"pong on port {port} to be ready")
        return proc

    running: dict[int, Proc] = {port: start_pong(port) for port in slots[:2]}  # oldest first
    stack.start_ping()
    stack.wait_ready("ping")
    stack.start_gateway(pong_addrs=[f"127.0.0.1:{port}" for port in slots])
    stack.wait_gateway()

    rolls: list[dict[str, float]] = []
    with Load(f"{stack.ping_url}/ping", "roll") as load, Readers(f"{stack.gateway_url}/pong") as readers:
        wait_for_200s(load, 200, 0.0, "200 pings before the first roll")
        wait_until(lambda: sum(readers.counts().values()) >= 50, 30, "50 GETs before the first roll")
        for _ in range(ROLLS):
            new_port = next(port for port in slots if port not in running)
            old_port = next(iter(running))
            started = time.monotonic()
            new = start_pong(new_port)
            ready = time.monotonic()
            wait_until(lambda: pong_gets(new_port) > 0, 30,
                       f"the gateway to send GET /pong to the new pong on {new_port}", 0.1)
            routed = time.monotonic()
            time.sleep(PRE_STOP_SECONDS)
            old = running.pop(old_port)
            served_by_old = pong_gets(old_port)
            code = old.stop(timeout=30)  # SIGTERM; SIGKILL (a failing code) after 30 s
            stopped = time.monotonic()
            assert code == 0, f"the old pong exited with {code}:\n{old.log_tail()}"
            assert served_by_old > 0, "the old pong never served through the gateway"
            running[new_port] = new
            rolls.append({"ready_s": ready - started, "routed_s": routed - ready,
                          "stop_s": stopped - routed - PRE_STOP_SECONDS})
            time.sleep(1.0)
        wait_for_200s(load, 100, time.monotonic(), "100 pings after the last roll")

    print(f"rolls (s): {rolls}")
    gets = readers.counts()
    error_log = (tmp_path / "nginx" / "logs" / "error.log").read_text(errors="replace")
    print(f"GET /pong through the gateway by status: {gets}")
    assert set(gets) == {200}, f"GETs that were not 200: {gets}\nnginx:\n{error_log[-3000:]}"
    # The rolls happened under traffic that met stopped processes: nginx tried an address whose
    # listener was closed and retried the GET elsewhere.
    assert "(111: Connection refused)" in error_log, "nginx never met a stopped pong"
    verify(stack, load, f"{ROLLS} pong rolls", pong_port=next(iter(running)))
