"""The autoscaler proved on real processes: a private RabbitMQ node with the management API, a
PostgreSQL server of the test's own, and pong replicas as host processes started and stopped by
the operator's own decision loop (`pingpong-operator autoscale`: the same management API reader
and the same pure decision the operator runs for a stack, printing one JSON line per decision).

A burst of AUTOSCALE_BURST (100,000) confirmed messages (`pingpong-loadgen fill`) into an empty
queue with pong at zero replicas: the first decision wakes pong, replicas rise to the maximum,
the backlog drains, and after the delay the replicas go back, one at a time, to zero. A second,
small burst wakes it again and it goes back to zero again. Then, from the broker's and the
store's own numbers: every confirmed message is stored exactly once, the broker redelivered
nothing (each scale-in step SIGTERMs a pong, which cancels its consumer and stores and acks what
it holds before exiting 0), and scale-in never skipped a step. Bounded: every wait has a deadline
(the whole test at most about ten minutes). The step-response times are printed, and written as
JSON to AUTOSCALE_REPORT when set (`make bench-autoscale` renders them into BENCHMARKS.md), never
asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from broker_cluster import PrivatePostgres
from system_helpers import Loadgen, PrivateBroker, Proc, Stack, base_env, free_port

BURST = int(os.environ.get("AUTOSCALE_BURST", "100000"))
SMALL_BURST = 2000
MAX_REPLICAS = 4
TARGET = 5000
DELAY_SECONDS = 3
DEADLINE_SECONDS = 600


@pytest.fixture
def management_broker() -> Iterator[PrivateBroker]:
    node = PrivateBroker(management=True)
    try:
        node.start()
        yield node
    finally:
        node.destroy()


class Pongs:
    """pong processes on free ports: started and SIGTERMed as the decisions say."""

    def __init__(self, stack: Stack, store: dict[str, str]) -> None:
        self.stack = stack
        self.store = store
        self.running: list[Proc] = []
        self.exits: list[int | None] = []
        self.stoppers: list[threading.Thread] = []
        self.lock = threading.Lock()

    def scale(self, replicas: int) -> None:
        while len(self.running) < replicas:
            port = free_port()
            self.running.append(self.stack._start("pong", [str(self.stack.bins["pong"])],
                                                  self.stack.service_env(port, self.store)))
        while len(self.running) > replicas:
            # The newest: every replica drains the same queue, so none is busier by design.
            proc = self.running.pop()
            thread = threading.Thread(target=self._stop, args=(proc,))
            thread.start()
            self.stoppers.append(thread)

    def _stop(self, proc: Proc) -> None:
        code = proc.stop(timeout=60)  # SIGTERM; SIGKILL (a failing code) after 60 s
        with self.lock:
            self.exits.append(code)

    def join(self) -> None:
        for thread in self.stoppers:
            thread.join(90)


def _queue(port: int, queue: str) -> dict[str, Any]:
    r = requests.get(f"http://127.0.0.1:{port}/api/queues/%2F/{queue}", auth=("guest", "guest"), timeout=10)
    r.raise_for_status()
    return r.json()


def test_a_burst_scales_pong_out_drains_and_scales_it_back_to_zero(
        bins: dict[str, Path], management_broker: PrivateBroker, private_postgres: PrivatePostgres,
        tmp_path: Path) -> None:
    operator = bins["pong"].parent / "pingpong-operator"
    if not os.access(operator, os.X_OK):
        pytest.fail(f"missing {operator}: build it with `cargo build -p pingpong-operator`", pytrace=False)
    node = management_broker
    stack = Stack(bins=bins, broker=node.address, workdir=tmp_path)
    database = private_postgres.create_database(f"pp_auto_{uuid.uuid4().hex[:10]}")
    store = {"PONG_STORE": "postgres", "DATABASE_URL": database, "PONG_MAX_MESSAGES": str(BURST * 2)}
    pongs = Pongs(stack, store)
    loadgen = Loadgen(bins["pingpong-loadgen"], node.address)
    env = base_env()
    env.update({"BROKER_USERNAME": "guest", "BROKER_PASSWORD": "guest"})
    decider = subprocess.Popen(
        [str(operator), "autoscale", "--management-url", f"http://127.0.0.1:{node.management_port}",
         "--queue", stack.queue, "--min-replicas", "0", "--max-replicas", str(MAX_REPLICAS),
         "--target-backlog-per-replica", str(TARGET), "--scale-down-delay-seconds", str(DELAY_SECONDS),
         "--interval-ms", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    history: list[dict[str, Any]] = []
    marks: dict[str, float] = {}
    published: list[dict[str, Any]] = []

    def fill(count: int) -> None:
        env_q = dict(node.address.env(stack.queue))
        report = subprocess.run([str(bins["pingpong-loadgen"]), "fill", "--count", str(count)],
                                env={**base_env(), **env_q}, capture_output=True, text=True, timeout=300)
        assert report.returncode == 0, report.stderr
        published.append(json.loads(report.stdout))

    try:
        assert decider.stdout is not None
        start = time.monotonic()
        phase = "burst"
        filler = threading.Thread(target=fill, args=(BURST,))
        filler.start()
        marks["burst"] = 0.0
        for line in decider.stdout:
            now = time.monotonic() - start
            assert now < DEADLINE_SECONDS, f"not done within {DEADLINE_SECONDS} s: {history[-5:]}"
            decision = json.loads(line)
            decision["phase"] = phase
            history.append(decision)
            pongs.scale(int(decision["replicas"]))
            replicas, backlog = decision["replicas"], decision["backlog"]
            if replicas > 0:
                marks.setdefault(f"{phase}_first_replica", now)
            if replicas == MAX_REPLICAS:
                marks.setdefault(f"{phase}_max", now)
            if filler.is_alive() or decision["error"] is not None:
                continue
            if backlog == 0 and f"{phase}_first_replica" in marks:
                marks.setdefault(f"{phase}_drained", now)
            if replicas == 0 and f"{phase}_drained" in marks:
                marks[f"{phase}_zero"] = now
                if phase == "wake":
                    break
                phase = "wake"
                marks["wake"] = now
                filler = threading.Thread(target=fill, args=(SMALL_BURST,))
                filler.start()
        filler.join(300)
    finally:
        decider.terminate()
        decider.wait(10)
        pongs.scale(0)
        pongs.join()
    print(f"decisions: {len(history)}; marks (s): { {k: round(v, 1) for k, v in marks.items()} }")
    print(f"published: {published}")
    burst = [d for d in history if d["phase"] == "burst"]
    peak = max(d["replicas"] for d in burst)
    assert peak == MAX_REPLICAS, f"replicas never reached {MAX_REPLICAS}: {burst[:20]}"
    assert "wake_zero" in marks, f"did not wake and return to zero: {history[-10:]}"
    assert history[-1]["replicas"] == 0
    wakes = [d for d in history if d["reason"] == "WokenByMessage"]
    assert len(wakes) == 2, f"woken once per burst: {wakes}"
    steps = [(d["from"], d["replicas"]) for d in history if d["replicas"] < d["from"]]
    assert steps and all(a - b == 1 for a, b in steps), f"scale-in one step at a time: {steps}"
    assert all(d["reason"] == "ScaledIn" for d in history if d["replicas"] < d["from"])
    # Every step-in came after at least the delay of lower demand: the first ScaledIn of each
    # phase follows DELAY_SECONDS of WaitingForDelay.
    for phase in ("burst", "wake"):
        ds = [d for d in history if d["phase"] == phase]
        first_in = next(i for i, d in enumerate(ds) if d["reason"] == "ScaledIn")
        waiting = [d["t"] for d in ds[:first_in] if d["reason"] == "WaitingForDelay"]
        # `t` is printed rounded to the millisecond (and 34.05 - 31.05 < 3 in floating point):
        # a difference within 1 ms of the delay is the delay.
        assert waiting and ds[first_in]["t"] - waiting[0] >= DELAY_SECONDS - 0.001, ds[:first_in + 1]

    assert sum(p["published"] for p in published) == BURST + SMALL_BURST, published
    assert all(code == 0 for code in pongs.exits), f"pong exit codes: {pongs.exits}\n{stack.logs()}"
    counted = private_postgres._run("psql", "-h", "127.0.0.1", "-p", str(private_postgres.port), "-U",
                                    "postgres", "-d", database.rsplit("/", 1)[1], "-Atc",
                                    "SELECT count(*), count(DISTINCT id) FROM pong_messages")
    assert counted.returncode == 0, counted.stderr
    rows, distinct = (int(x) for x in counted.stdout.strip().split("|"))
    print(f"stored {rows} rows ({distinct} distinct) of {BURST + SMALL_BURST} confirmed")
    assert rows == distinct == BURST + SMALL_BURST, "every confirmed message stored exactly once"
    queue = _queue(node.management_port or 0, stack.queue)
    redelivered = int((queue.get("message_stats") or {}).get("redeliver", 0))
    print(f"broker: redelivered {redelivered}, left in queue {queue.get('messages')}")
    assert redelivered == 0, "scale-in caused redeliveries"
    assert queue.get("messages") == 0
    report = os.environ.get("AUTOSCALE_REPORT")
    if report:  # `make bench-autoscale` renders these into BENCHMARKS.md
        Path(report).write_text(json.dumps({
            "burst": BURST, "small_burst": SMALL_BURST, "max_replicas": MAX_REPLICAS,
            "target": TARGET, "delay_seconds": DELAY_SECONDS, "decisions": len(history),
            "marks": marks, "fill_seconds": [p["seconds"] for p in published],
            "stored": rows, "distinct": distinct, "redelivered": redelivered,
        }))
