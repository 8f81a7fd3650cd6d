"""pong's autoscaler on the local control plane against a real broker's numbers.

A private RabbitMQ node with the management plugin runs on the host; the operator (restarted with
BROKER_MANAGEMENT_URL pointing at it) reads the stack's queue with the stack's own credentials
Secret. What is shown:
- `kubectl scale pingpongstack` works through the CRD's scale subresource without autoscaling, and
  is refused at admission with autoscaling (the message says why);
- a backlog raises the pong Deployment's replicas at once; an empty queue lowers them one step at
  a time after the delay; `minReplicas: 0` sleeps and the first message wakes it;
- the Deployment's `replicas` has one owner (the operator's reconcile field manager), while
  `status.autoscaling` is the autoscaler's; `kubectl scale deployment` is reverted, an HPA on the
  Deployment is refused and reported (status message and a Warning Event that name it).
"""

from __future__ import annotations

import secrets
import sys
from typing import Any, Iterator

import pytest
import requests

from e2e_helpers import ROOT, Cluster, eventually, stack_doc

sys.path.insert(0, str(ROOT / "tests" / "system"))
from system_helpers import PrivateBroker  # noqa: E402

QUEUE = "autoscale-e2e"
STACK = "auto"


class Management:
    """The private node's management API as one user."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}/api"
        self.auth = (user, password)

    def put_queue(self, queue: str) -> None:
        r = requests.put(f"{self.base}/queues/%2F/{queue}", json={"durable": True}, auth=self.auth, timeout=10)
        assert r.status_code in (201, 204), r.text

    def publish(self, queue: str, count: int) -> None:
        for i in range(count):
            body = {"properties": {"delivery_mode": 2}, "routing_key": queue,
                    "payload": f'{{"id":"{i}","msg":"autoscale"}}', "payload_encoding": "string"}
            r = requests.post(f"{self.base}/exchanges/%2F/amq.default/publish", json=body,
                              auth=self.auth, timeout=10)
            assert r.status_code == 200 and r.json().get("routed"), r.text

    def purge(self, queue: str) -> None:
        r = requests.delete(f"{self.base}/queues/%2F/{queue}/contents", auth=self.auth, timeout=10)
        assert r.status_code == 204, r.text


@pytest.fixture
def broker() -> Iterator[tuple[PrivateBroker, Management]]:
    node = PrivateBroker(management=True)
    try:
        node.start()
        password = secrets.token_hex(16)
        for args in (("add_user", "autoscaler", password),
                     ("set_user_tags", "autoscaler", "management"),
                     ("set_permissions", "-p", "/", "autoscaler", ".*", ".*", ".*")):
            result = node.ctl(*args)
            assert result.returncode == 0, result.stderr
        assert node.management_port is not None
        api = Management(node.management_port, "autoscaler", password)
        eventually("the management API answers",
                   lambda: requests.get(f"{api.base}/overview", auth=api.auth, timeout=5).ok, timeout=60)
        yield node, api
    finally:
        node.destroy()


@pytest.fixture
def autoscaling_operator(local: Cluster, broker: tuple[PrivateBroker, Management]) -> Iterator[None]:
    node, _ = broker
    op = local.host_operator("operator")
    op.stop()
    env = {"BROKER_MANAGEMENT_URL": f"http://127.0.0.1:{node.management_port}",
           "AUTOSCALE_INTERVAL_SECONDS": "1"}
    local.operator_script("start", "operator", str(op.port), env=env)
    try:
        eventually("the operator leads again", op.ready, timeout=60)
        yield
    finally:
        op.stop()
        op.start()
        eventually("the operator is back with its usual settings", op.ready, timeout=60)


def _pong(local: Cluster, ns: str) -> dict[str, Any]:
    return local.get("deployment", f"{STACK}-pong", ns, managed_fields=True)


def _replicas(local: Cluster, ns: str) -> int:
    return int(_pong(local, ns)["spec"].get("replicas", 1))


def _autoscaling(local: Cluster, ns: str) -> dict[str, Any]:
    return (local.stack(ns, STACK).get("status") or {}).get("autoscaling") or {}


def _owners(obj: dict[str, Any], path: list[str]) -> set[str]:
    """Field managers that own `path` (e.g. ["spec", "replicas"])."""
    owners = set()
    for entry in obj["metadata"]["managedFields"]:
        node = entry.get("fieldsV1", {})
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, dict) else None
        if node is not None:
            owners.add(entry["manager"])
    return owners


def _events(local: Cluster, ns: str, reason: str) -> list[dict[str, Any]]:
    items = local.get("events.events.k8s.io", namespace=ns)["items"]
    return [e for e in items if e.get("reason") == reason and e.get("regarding", {}).get("name") == STACK]


def test_autoscaling_follows_the_broker_and_owns_replicas(
        local: Cluster, ns: str, broker: tuple[PrivateBroker, Management], autoscaling_operator: None) -> None:
    _, api = broker
    api.put_queue(QUEUE)
    user, password = api.auth
    local.kubectl("create", "secret", "generic", "-n", ns, "broker-user",
                  f"--from-literal=username={user}", f"--from-literal=password={password}")
    local.kubectl("label", "secret", "-n", ns, "broker-user", "pingpong.dev/referable=true")
    spec: dict[str, Any] = {
        "rabbitmq": {"storage": {"ephemeral": True}, "queue": QUEUE, "credentialsSecret": "broker-user"},
        "pong": {"store": {"type": "postgres", "postgres": {"provisioned": {"storage": {"ephemeral": True}}}}},
    }
    local.apply(stack_doc(STACK, spec), ns)
    local.wait_ready(ns, STACK)

    # Without autoscaling, `kubectl scale` of the stack sets spec.pong.replicas (scale subresource).
    local.kubectl("scale", "-n", ns, f"pingpongstack/{STACK}", "--replicas=2")
    eventually("pong follows kubectl scale of the stack", lambda: _replicas(local, ns) == 2)

    # Turning autoscaling on keeps the 2 running pods (within the bounds) until the first decision.
    spec["pong"]["replicas"] = 2
    spec["pong"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 4, "targetBacklogPerReplica": 10,
                                   "scaleDownDelaySeconds": 2}
    local.apply(stack_doc(STACK, spec), ns)
    eventually("the first decision is in status", lambda: _autoscaling(local, ns).get("reason"), timeout=60)

    # Refused at admission while autoscaling is on.
    refused = local.kubectl("scale", "-n", ns, f"pingpongstack/{STACK}", "--replicas=3", check=False)
    assert refused.returncode != 0
    assert "pong.replicas cannot change while pong.autoscaling is set" in refused.stderr, refused.stderr

    # A backlog of 35 with a target of 10 per replica: 4 at once.
    api.publish(QUEUE, 35)
    eventually("pong scaled out on the backlog", lambda: _replicas(local, ns) == 4, timeout=60)
    status = _autoscaling(local, ns)
    assert status["desiredReplicas"] == 4 and status["backlog"] >= 35, status
    # The next round (1 s later) may already have written `Steady` over the scale-out's reason:
    # the scale-out itself is in its Event.
    assert status["reason"] in ("ScaledOut", "BacklogGrowing", "Steady"), status
    assert _events(local, ns, "ScaledOut") or _events(local, ns, "BacklogGrowing"), "an Event per change"

    # One owner of spec.replicas: the reconcile's field manager; status.autoscaling: the autoscaler's.
    deployment = _pong(local, ns)
    assert _owners(deployment, ["spec", "replicas"]) == {"pingpong-operator"}, deployment["metadata"]["managedFields"]
    stack = local.get("pingpongstack", STACK, ns, managed_fields=True)
    assert "pingpong-operator/autoscaler" in _owners(stack, ["status", "autoscaling"])
    assert "pingpong-operator/status" not in _owners(stack, ["status", "autoscaling"])

    # kubectl scale of the Deployment is reverted (the operator owns replicas while autoscaling).
    local.kubectl("scale", "-n", ns, f"deployment/{STACK}-pong", "--replicas=1")
    eventually("the operator restored the decided replicas", lambda: _replicas(local, ns) == 4)

    # An HPA on the Deployment is refused and named in status and a Warning Event.
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "someone-elses-hpa"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{STACK}-pong"},
                    "minReplicas": 1, "maxReplicas": 2,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}}
    local.apply(hpa, ns)
    eventually("the HPA is reported", lambda: "someone-elses-hpa" in _autoscaling(local, ns).get("message", ""),
               timeout=60)
    assert _events(local, ns, "ConflictingAutoscaler")
    local.kubectl("delete", "hpa", "-n", ns, "someone-elses-hpa")
    assert _replicas(local, ns) == 4

    # Empty queue: down one step at a time after the delay, to minReplicas.
    api.purge(QUEUE)
    seen: list[int] = []

    def back_to_min() -> bool:
        replicas = _replicas(local, ns)
        if not seen or seen[-1] != replicas:
            seen.append(replicas)
        return replicas == 1

    eventually("pong scaled in to minReplicas", back_to_min, timeout=120, interval=0.2)
    assert seen == sorted(seen, reverse=True), f"never up while scaling in: {seen}"
    assert _events(local, ns, "ScaledIn")

    # Scale to zero, then the first message wakes it.
    spec["pong"]["autoscaling"]["minReplicas"] = 0
    local.apply(stack_doc(STACK, spec), ns)
    eventually("pong scaled to zero", lambda: _replicas(local, ns) == 0, timeout=120)
    api.publish(QUEUE, 1)
    eventually("the first message woke pong", lambda: _replicas(local, ns) == 1, timeout=60)
    # The next round may already have written `Steady`: the wake-up is in its Event.
    assert _autoscaling(local, ns)["reason"] in ("WokenByMessage", "Steady")
    assert _events(local, ns, "WokenByMessage"), "the wake-up has its Event"
