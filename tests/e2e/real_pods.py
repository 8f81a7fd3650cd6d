"""What the real-pod scenarios (tests/e2e/test_e2e_2x) share: a bounded, paced load of POST /ping
through the Gateway that records every answer, the messages GET /pong returns, and stacks routed
through the Gateway on the local cluster's real node.

Every load is bounded in requests and time; the assertions are about answers and messages, never
about how long something took.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from e2e_helpers import Cluster, eventually, stack_doc

GATEWAY = {"name": "public", "namespace": "gateway-system"}
# The node the real pods run on (scripts/cluster/node.sh).
REAL_NODE = "pingpong-node"
# Upper bounds of one load run: it stops at whichever comes first (or when told to). The load is
# paced (LOAD_PACE_SECONDS between requests) so that the time bound, not the count, ends a run
# however fast the machine is: an unpaced run of 3,000 requests ended in CI before a rollout had
# finished. The count keeps every stored message within pong's default bound (100,000).
LOAD_MAX_REQUESTS = 20000
LOAD_MAX_SECONDS = 600
LOAD_PACE_SECONDS = 0.02


@dataclass
class Load:
    """POST /ping through the Gateway, one request at a time, each on a new connection (as many
    independent clients would), until stopped or a bound is reached. `statuses` counts every
    answer by HTTP status (0: no answer)."""

    url: str
    host: str
    prefix: str
    acked: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> "Load":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_MAX_SECONDS
        for n in range(LOAD_MAX_REQUESTS):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            msg = f"{self.prefix}-{n:05d}"
            try:
                r = requests.post(f"{self.url}/ping", json={"msg": msg}, headers={"Host": self.host},
                                  timeout=15)
                self.statuses[r.status_code] += 1
                if 200 <= r.status_code < 300 and r.json().get("content") == msg:
                    self.acked.append(msg)
                else:
                    self.failures.append(f"{msg}: {r.status_code} {r.text[:200]}")
            except (requests.RequestException, ValueError) as error:
                self.statuses[0] += 1
                self.failures.append(f"{msg}: {error!r}")
            self.stop.wait(LOAD_PACE_SECONDS)

    def wait_acked(self, count: int, timeout: float = 120) -> None:
        target = len(self.acked) + count
        eventually(f"{count} more acknowledged POST /ping (failures so far: {self.failures[-3:]})",
                   lambda: len(self.acked) >= target or self.finished(), timeout=timeout)
        assert not self.finished(), f"the load stopped early: {len(self.acked)} acked, {self.failures[-3:]}"

    def finished(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive(), "the load thread did not stop"


def stored_message_list(url: str, host: str) -> list[str]:
    """Every message pong stores, walking GET /pong page by page (keyset, `after=<id>`), in
    order and with repeats, so that a message stored twice shows twice."""
    out: list[str] = []
    after = None
    for _ in range(100):
        params = {"limit": "1000"} | ({"after": after} if after else {})
        r = requests.get(f"{url}/pong", params=params, headers={"Host": host}, timeout=15)
        r.raise_for_status()
        page = r.json()
        if not page:
            return out
        out.extend(m["msg"] for m in page)
        after = page[-1]["id"]
    raise AssertionError("GET /pong did not end within 100 pages")


def stored_messages(url: str, host: str) -> set[str]:
    """The set of messages GET /pong returns."""
    return set(stored_message_list(url, host))


def real_stack(cluster: Cluster, ns: str, name: str, spec: dict[str, Any], timeout: int = 900) -> str:
    """Apply a stack routed through the Gateway with its own host name; wait for Ready; every pod
    runs on the real node. Returns the host name."""
    host = f"{name}.{ns}.pingpong.test"
    cluster.apply(stack_doc(name, {**spec, "ingress": {"enabled": False},
                                   "gateway": {"parentRef": GATEWAY, "hostname": host}}), ns)
    cluster.wait_ready(ns, name, timeout=timeout)
    for pod in cluster.get("pods", namespace=ns)["items"]:
        assert pod["spec"]["nodeName"] == "pingpong-node", pod["metadata"]["name"]
    return host


def post_ok(url: str, host: str, msg: str, timeout: float = 180) -> None:
    def ok() -> bool:
        r = requests.post(f"{url}/ping", json={"msg": msg}, headers={"Host": host}, timeout=15)
        return r.status_code == 200 and r.json().get("content") == msg

    eventually(f"POST /ping {msg!r} through the Gateway answering 200", ok, timeout=timeout, interval=2)


def pods(cluster: Cluster, ns: str, component: str) -> list[dict[str, Any]]:
    """The pods of a component that are not being deleted."""
    items = cluster.get("pods", namespace=ns, selector=f"app.kubernetes.io/component={component}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def pod_uid(cluster: Cluster, ns: str, component: str) -> str | None:
    """The uid of a single-pod component's pod (the broker, the database), None unless exactly
    one is there (not being deleted)."""
    found = pods(cluster, ns, component)
    return found[0]["metadata"]["uid"] if len(found) == 1 else None


def ready_pods(cluster: Cluster, ns: str, component: str) -> list[dict[str, Any]]:
    return [p for p in pods(cluster, ns, component)
            if all(s.get("ready") for s in p["status"].get("containerStatuses") or [{}])]


def exec_in(cluster: Cluster, ns: str, pod: str, *command: str, timeout: float = 60) -> str:
    return cluster.kubectl("-n", ns, "exec", pod, "--", *command, timeout=timeout).stdout


def local_volumes(cluster: Cluster, ns: str, storage_class: str, count: int, prefix: str) -> list[str]:
    """`count` local PersistentVolumes of 1Gi on the real node, in the class `storage_class`
    (the node has no provisioner; kwok's default class writes hostPath volumes the kubelet creates
    root-owned). Named `<ns>-<prefix>-<i>`, under the cluster's node directory; the caller
    deletes them (released once the namespace and its claims are gone)."""
    names = []
    for i in range(count):
        path = Path(cluster.state_dir) / "node" / "local-volumes" / ns / f"{prefix}-{i}"
        path.mkdir(parents=True, exist_ok=True)
        name = f"{ns}-{prefix}-{i}"
        cluster.apply({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"pingpong.dev/e2e": ns}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": storage_class,
                "volumeMode": "Filesystem",
                "local": {"path": str(path.resolve())},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [REAL_NODE]}]}]}},
            },
        })
        names.append(name)
    return names
