"""Stacks on pods that really run (the local cluster's real node: kubelet, containerd, runc, CNI
bridge, kube-proxy, CoreDNS; the Gateway is Traefik), driven through the Gateway like a user:

- a rolling update of ping (a spec change) under a steady load of POST /ping answers only 2xx, and
  every acknowledged message reaches GET /pong;
- the broker credentials reach ping and pong as files (never as values in the pod template), and a
  rotation of the user's Secret rolls the broker, ping and pong onto the new password, which the
  data path then uses;

Not here: a three-node broker in pods. The operator clusters RabbitMQ nodes with the Kubernetes
peer discovery of RabbitMQ >= 4.1 (no RBAC), and the broker image built here is Debian 12's
rabbitmq-server 3.10.8 (no registry, no newer Debian package for bookworm), which the operator
refuses for more than one node (BrokerImageTooOld). tests/system/test_system_broker_ha.py proves the failover on a private
three-node cluster of processes instead.

Every load is bounded in requests and time; the assertions are about answers and messages, never
about how long something took.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from e2e_helpers import Cluster, eventually, stack_doc, unique

GATEWAY = {"name": "public", "namespace": "gateway-system"}
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
    independent clients would), until stopped or a bound is reached."""

    url: str
    host: str
    prefix: str
    acked: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
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
                if 200 <= r.status_code < 300 and r.json().get("content") == msg:
                    self.acked.append(msg)
                else:
                    self.failures.append(f"{msg}: {r.status_code} {r.text[:200]}")
            except (requests.RequestException, ValueError) as error:
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


def stored_messages(url: str, host: str) -> set[str]:
    """Every message pong stores, walking GET /pong page by page (keyset, `after=<id>`)."""
    out: set[str] = set()
    after = None
    for _ in range(100):
        params = {"limit": "1000"} | ({"after": after} if after else {})
        r = requests.get(f"{url}/pong", params=params, headers={"Host": host}, timeout=15)
        r.raise_for_status()
        page = r.json()
        if not page:
            return out
        out.update(m["msg"] for m in page)
        after = page[-1]["id"]
    raise AssertionError("GET /pong did not end within 100 pages")


def _real_stack(cluster: Cluster, ns: str, name: str, spec: dict[str, Any]) -> str:
    """Apply a stack routed through the Gateway with its own host name; wait for Ready."""
    host = f"{name}.{ns}.pingpong.test"
    cluster.apply(stack_doc(name, {**spec, "ingress": {"enabled": False},
                                   "gateway": {"parentRef": GATEWAY, "hostname": host}}), ns)
    cluster.wait_ready(ns, name, timeout=900)
    for pod in cluster.get("pods", namespace=ns)["items"]:
        assert pod["spec"]["nodeName"] == "pingpong-node", pod["metadata"]["name"]
    return host


def _post_ok(url: str, host: str, msg: str, timeout: float = 180) -> None:
    def ok() -> bool:
        r = requests.post(f"{url}/ping", json={"msg": msg}, headers={"Host": host}, timeout=15)
        return r.status_code == 200 and r.json().get("content") == msg

    eventually(f"POST /ping {msg!r} through the Gateway answering 200", ok, timeout=timeout, interval=2)


def _pods(cluster: Cluster, ns: str, component: str) -> list[dict[str, Any]]:
    pods = cluster.get("pods", namespace=ns, selector=f"app.kubernetes.io/component={component}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _ready_pods(cluster: Cluster, ns: str, component: str) -> list[dict[str, Any]]:
    return [p for p in _pods(cluster, ns, component)
            if all(s.get("ready") for s in p["status"].get("containerStatuses") or [{}])]


def _exec(cluster: Cluster, ns: str, pod: str, *command: str) -> str:
    return cluster.kubectl("-n", ns, "exec", pod, "--", *command, timeout=60).stdout


def _env(pod: dict[str, Any]) -> dict[str, str]:
    (container,) = pod["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _secret(name: str, username: str, password: str) -> dict[str, Any]:
    # pingpong.dev/referable: the opt-in that lets a stack name this Secret.
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": {"pingpong.dev/referable": "true"}},
            "stringData": {"username": username, "password": password}}


def _credential_files_match(cluster: Cluster, ns: str, username: str, password: str) -> bool:
    """Every running ping and pong container reads exactly these credentials from its files, and
    no pod template holds the password as a value."""
    for component in ("ping", "pong"):
        pods = _ready_pods(cluster, ns, component)
        if not pods:
            return False
        for pod in pods:
            env = _env(pod)
            assert password not in json.dumps(pod["spec"]), f"{pod['metadata']['name']} carries the password"
            user_file, pass_file = env["RABBITMQ_DEFAULT_USER_FILE"], env["RABBITMQ_DEFAULT_PASS_FILE"]
            name = pod["metadata"]["name"]
            if _exec(cluster, ns, name, "cat", user_file).strip() != username:
                return False
            if _exec(cluster, ns, name, "cat", pass_file).strip() != password:
                return False
    return True


def test_rolling_ping_under_load_and_rotating_the_credentials(cluster: Cluster, real_ns: str) -> None:
    ns, name = real_ns, "roll"
    url = cluster.gateway_url
    assert url is not None
    password = unique("first-password")
    cluster.apply(_secret("roll-broker", "app-user", password), ns)
    host = _real_stack(cluster, ns, name, {"rabbitmq": {"image": cluster.local_image("rabbitmq"),
                                                         "storage": {"ephemeral": True},
                                                         "credentialsSecret": "roll-broker"}})
    _post_ok(url, host, unique("warm-up"))

    # The credentials reach ping and pong as files.
    assert _credential_files_match(cluster, ns, "app-user", password), "the credential files differ"

    # A spec change rolls ping while the load runs: no answer other than 2xx.
    (before,) = _pods(cluster, ns, "ping")
    load = Load(url, host, unique("roll")).start()
    try:
        load.wait_acked(20)
        cluster.kubectl("-n", ns, "patch", "pingpongstack", name, "--type=merge", "-p",
                        json.dumps({"spec": {"ping": {"env": [{"name": "E2E_ROLL", "value": "1"}]}}}))
        cluster.kubectl("-n", ns, "rollout", "status", f"deployment/{name}-ping", "--timeout=300s",
                        timeout=330)
        eventually("the old ping pod gone", lambda: not cluster.exists("pod", before["metadata"]["name"], ns),
                   timeout=120)
        (after,) = _ready_pods(cluster, ns, "ping")
        assert _env(after).get("E2E_ROLL") == "1", "the rolled ping pod lacks the new variable"
        load.wait_acked(20)
    finally:
        load.halt()
    assert load.failures == [], f"{len(load.failures)} of {len(load.failures) + len(load.acked)} " \
                                f"POST /ping were not 2xx during the roll: {load.failures[:5]}"
    acked = set(load.acked)
    eventually(f"all {len(acked)} acknowledged messages in GET /pong",
               lambda: acked <= stored_messages(url, host), timeout=120, interval=2)

    # Rotation: a new password in the user's Secret rolls the broker, ping and pong onto it.
    uids = {p["metadata"]["uid"] for c in ("broker", "ping", "pong") for p in _pods(cluster, ns, c)}
    rotated = unique("second-password")
    cluster.apply(_secret("roll-broker", "app-user", rotated), ns)
    cluster.kubectl("-n", ns, "annotate", "pingpongstack", name, f"reconcile={time.time_ns()}", "--overwrite")
    for component in ("broker", "ping", "pong"):
        eventually(f"every {component} pod replaced and Ready after the rotation",
                   lambda c=component: (pods := _ready_pods(cluster, ns, c)) and len(pods) == len(_pods(cluster, ns, c))
                   and all(p["metadata"]["uid"] not in uids for p in pods), timeout=600, interval=2)
    assert _credential_files_match(cluster, ns, "app-user", rotated), "the rotated credential files differ"
    stored = base64.b64decode(cluster.get("secret", "roll-broker", ns)["data"]["password"]).decode()
    assert stored == rotated, "the operator wrote the user's Secret"
    # ping publishes with the new password, and pong consumes with it.
    msg = unique("after-rotation")
    _post_ok(url, host, msg, timeout=300)
    eventually("the message sent after the rotation in GET /pong",
               lambda: msg in stored_messages(url, host), timeout=120, interval=2)

