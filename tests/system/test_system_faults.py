"""Fault tests on a private RabbitMQ node that the test starts itself (own node name, ports, data
and log directories, no plugins): the shared broker is never touched.

1. The broker stops while pings are being sent: every ping answered 200 is in GET /pong once the
   broker is back; pings during the outage get 503 with Retry-After (never a hang past the client
   timeout); /readyz of both services is 503 during the outage and 200 afterwards.
2. The broker restarts (cleanly) four times under load: after each restart ping and pong are ready
   again and pong stores what ping confirms after it; in the end every ping answered 200 is stored
   once.
3. pong is killed (SIGKILL) while holding unacknowledged deliveries: they are redelivered to the
   next pong, none is lost.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from system_helpers import PrivateBroker, Stack, Workers, http_status, wait_until

CLIENT_TIMEOUT = 10.0
SENDERS = 4
RESTARTS = 4


@dataclass
class Outcome:
    phase: str
    msg: str
    status: int | None  # None: no HTTP answer (timeout, connection error)
    id: str | None = None
    retry_after: str | None = None
    error: str | None = None


class Senders(Workers):
    """Threads that POST /ping back to back and record every outcome with the phase it began in."""

    def __init__(self, url: str) -> None:
        super().__init__(SENDERS, CLIENT_TIMEOUT + 5)
        self.url = url
        self.phase = "before"
        self.outcomes: list[Outcome] = []

    def _run(self, worker: int) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            phase, msg = self.phase, f"outage-{worker}-{n}"
            try:
                response = session.post(self.url, json={"msg": msg}, timeout=CLIENT_TIMEOUT)
                outcome = Outcome(phase, msg, response.status_code,
                                  retry_after=response.headers.get("Retry-After"))
                if response.status_code == 200:
                    outcome.id = response.json()["id"]
            except requests.RequestException as error:
                outcome = Outcome(phase, msg, None, error=type(error).__name__)
                session = requests.Session()
            with self.lock:
                self.outcomes.append(outcome)
            if outcome.status != 200:
                time.sleep(0.05)  # no busy loop against an unavailable service

    def count(self, phase: str, status: int | None) -> int:
        with self.lock:
            return sum(1 for o in self.outcomes if o.phase == phase and o.status == status)

    def confirmed(self, phase: str | None = None) -> dict[str, str]:
        """{id: msg} of the pings answered 200 (in `phase`, or in any)."""
        with self.lock:
            return {o.id: o.msg for o in self.outcomes
                    if o.status == 200 and o.id is not None and phase in (None, o.phase)}


def wait_stored(stack: Stack, broker: PrivateBroker, confirmed: dict[str, str], timeout: float,
                what: str) -> dict[str, str]:
    """Waits until every id of `confirmed` is in GET /pong; returns {id: msg} of everything stored.
    On timeout, says how many are missing and whether they still sit in the queue (pong stopped
    consuming) or are gone."""
    def all_stored() -> dict[str, str] | None:
        stored = {m["id"]: m["msg"] for m in stack.stored()}
        return stored if confirmed.keys() <= stored.keys() else None

    try:
        return wait_until(all_stored, timeout, what, 0.25)
    except AssertionError:
        have = {m["id"] for m in stack.stored()}
        lost = [(i, m) for i, m in confirmed.items() if i not in have]
        depth = broker.queues().get(stack.queue)
        raise AssertionError(f"{what}: {len(lost)} of {len(confirmed)} pings answered 200 are not in "
                             f"GET /pong; queue {stack.queue} (ready, unacked): {depth}: {lost[:10]}")


def test_broker_outage_loses_no_confirmed_ping(private_broker: PrivateBroker, fault_stack: Stack) -> None:
    stack = fault_stack
    stack.start_ping()
    stack.start_pong()
    stack.wait_ready("ping")
    stack.wait_ready("pong")

    readiness: dict[str, list[int | None]] = {"outage": [], "after": []}
    with Senders(f"{stack.ping_url}/ping") as senders:
        wait_until(lambda: senders.count("before", 200) >= 100, 60, "100 pings before the outage")

        senders.phase = "outage"
        private_broker.stop()
        for url in (stack.ping_url, stack.pong_url):
            wait_until(lambda: http_status(f"{url}/readyz") == 503, 30, f"{url}/readyz to say 503")
            readiness["outage"].append(503)
        wait_until(lambda: senders.count("outage", 503) >= 20, 30, "20 pings answered 503 during the outage")
        outage_200_while_down = senders.count("outage", 200)

        senders.phase = "recovery"
        private_broker.start()
        for url in (stack.ping_url, stack.pong_url):
            wait_until(lambda: http_status(f"{url}/readyz") == 200, 90, f"{url}/readyz back to 200")
            readiness["after"].append(200)
        senders.phase = "after"
        wait_until(lambda: senders.count("after", 200) >= 100, 60, "100 pings after the broker is back")

    outcomes = senders.outcomes
    hung = [o for o in outcomes if o.status is None]
    assert not hung, f"{len(hung)} pings got no answer within {CLIENT_TIMEOUT}s: {hung[:5]}"
    unexpected = [o for o in outcomes if o.status not in (200, 503)]
    assert not unexpected, f"statuses other than 200/503: {unexpected[:5]}"
    no_retry_after = [o for o in outcomes if o.status == 503 and not o.retry_after]
    assert not no_retry_after, f"503 without Retry-After: {no_retry_after[:5]}"
    assert readiness == {"outage": [503, 503], "after": [200, 200]}

    confirmed = senders.confirmed()
    assert len(confirmed) == sum(o.status == 200 for o in outcomes), "ping returned a duplicate id"
    stored = wait_stored(stack, private_broker, confirmed, 60,
                         f"every ping answered 200 to be in GET /pong (200s while the broker was "
                         f"stopping: {outage_200_while_down})")
    for id_, msg in confirmed.items():
        assert stored[id_] == msg
    ids = [m["id"] for m in stack.stored()]
    assert len(ids) == len(set(ids)), "GET /pong holds a message twice"
    counts = {(o.phase, o.status): 0 for o in outcomes}
    for o in outcomes:
        counts[(o.phase, o.status)] += 1
    print(f"outcomes by (phase, status): {sorted(counts.items())}; stored {len(ids)}")



def test_repeated_broker_restarts_lose_nothing_and_pong_keeps_consuming(private_broker: PrivateBroker,
                                                                        fault_stack: Stack) -> None:
    """RESTARTS clean broker restarts under load. After each, ping and pong are ready again and pong
    stores what ping confirms after it: a consumer left behind on the dead connection (seen once in
    CI) shows at the restart where it happens. In the end every ping answered 200 is stored once."""
    stack = fault_stack
    stack.start_ping()
    stack.start_pong()
    stack.wait_ready("ping")
    stack.wait_ready("pong")
    with Senders(f"{stack.ping_url}/ping") as senders:
        wait_until(lambda: senders.count("before", 200) >= 50, 60, "50 pings before the first restart")
        for cycle in range(1, RESTARTS + 1):
            senders.phase = f"restart-{cycle}"
            private_broker.stop()
            private_broker.start()
            for url in (stack.ping_url, stack.pong_url):
                wait_until(lambda: http_status(f"{url}/readyz") == 200, 90,
                           f"{url}/readyz back to 200 after restart {cycle}")
            phase = f"after-{cycle}"
            senders.phase = phase
            wait_until(lambda: senders.count(phase, 200) >= 50, 60, f"50 pings after restart {cycle}")
            wait_stored(stack, private_broker, senders.confirmed(phase), 30,
                        f"pong to store the pings confirmed after restart {cycle}")

    outcomes = senders.outcomes
    hung = [o for o in outcomes if o.status is None]
    assert not hung, f"{len(hung)} pings got no answer within {CLIENT_TIMEOUT}s: {hung[:5]}"
    unexpected = [o for o in outcomes if o.status not in (200, 503)]
    assert not unexpected, f"statuses other than 200/503: {unexpected[:5]}"
    confirmed = senders.confirmed()
    assert len(confirmed) == sum(o.status == 200 for o in outcomes), "ping returned a duplicate id"
    stored = wait_stored(stack, private_broker, confirmed, 60, "every ping answered 200 to be in GET /pong")
    for id_, msg in confirmed.items():
        assert stored[id_] == msg
    ids = [m["id"] for m in stack.stored()]
    assert len(ids) == len(set(ids)), "GET /pong holds a message twice"
    print(f"{RESTARTS} restarts: {len(outcomes)} pings, {len(confirmed)} answered 200, "
          f"{sum(o.status == 503 for o in outcomes)} answered 503; stored {len(ids)}")

def test_killed_pong_gets_its_unacked_messages_redelivered(private_broker: PrivateBroker,
                                                            fault_stack: Stack) -> None:
    stack = fault_stack
    total = 3000
    stack.start_ping()
    stack.wait_ready("ping")

    # 1. Fill the queue while no pong consumes it.
    def send(i: int) -> str:
        response = requests.post(f"{stack.ping_url}/ping", json={"msg": f"redeliver-{i}"}, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        published = set(pool.map(send, range(total)))
    assert len(published) == total
    assert private_broker.queues()[stack.queue] == (total, 0)

    # 2. Start pong and freeze it (SIGSTOP) while it holds deliveries it has not acked yet.
    pong = stack.start_pong()
    wait_until(lambda: http_status(f"{stack.pong_url}/readyz") == 200, 60, "pong to start consuming", 0.005)
    ready = unacked = 0
    for _ in range(50):
        pong.send(signal.SIGSTOP)
        time.sleep(0.3)  # let acks already on the wire reach the broker
        ready, unacked = private_broker.queues()[stack.queue]
        if unacked > 0:
            break
        assert ready > 0, f"pong consumed all {total} messages before it could be frozen; raise `total`"
        pong.send(signal.SIGCONT)
        time.sleep(0.01)
    assert unacked > 0, "could not catch pong with unacked deliveries"
    # While pong is frozen nothing can settle: ready + unacked is the fixed remainder R.
    remainder = ready + unacked
    assert sum(private_broker.queues()[stack.queue]) == remainder

    # 3. Crash it; the broker requeues what it had not acked.
    pong.kill()
    wait_until(lambda: private_broker.queues()[stack.queue] == (remainder, 0), 30,
               f"the broker to requeue pong's {unacked} unacked deliveries")

    # 4. A new pong gets exactly those messages.
    stack.start_pong()
    wait_until(lambda: private_broker.queues()[stack.queue] == (0, 0), 60, "the new pong to drain the queue", 0.5)
    stored = wait_until(lambda: (s := stack.stored()) and len(s) >= remainder and s, 30,
                        f"{remainder} messages in the new pong")
    ids = [m["id"] for m in stored]
    assert len(ids) == remainder, f"new pong stored {len(ids)}, expected R = {remainder}"
    assert len(set(ids)) == remainder, "the new pong stored a message twice"
    assert set(ids) <= published, "the new pong stored messages that were never published"
    print(f"published {total}; at kill: ready {ready}, unacked {unacked}; redelivered and stored {remainder}")
