"""Scale-in removes the least busy pong pod, on the local control plane.

The kwok pods run nothing, so no pong consumes from a broker here: a stub of the RabbitMQ
management API (on 127.0.0.1, the operator restarted with BROKER_MANAGEMENT_URL pointing at it)
answers the queue's numbers and `/api/channels` with the pods' own IPs as the channels' peers,
each holding a chosen number of unacknowledged messages. What is real: the operator's decision,
its `controller.kubernetes.io/pod-deletion-cost` annotations (field manager
`pingpong-operator/pod-deletion-cost`), and the ReplicaSet controller of kube-controller-manager
choosing the pod to delete from them. The path with a real broker's channels is the same code
(`operator/src/autoscale/deletion_cost.rs`, unit-tested on the management API's JSON).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from e2e_helpers import Cluster, eventually, metric_sum, stack_doc

STACK = "least-busy"
QUEUE = "least-busy-e2e"
ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
MANAGER = "pingpong-operator/pod-deletion-cost"


class StubManagement:
    """GET /api/queues/%2F/<queue> and GET /api/channels from settable JSON."""

    def __init__(self) -> None:
        self.queue: dict[str, Any] = {"name": QUEUE, "messages_ready": 0,
                                      "messages_unacknowledged": 0, "consumers": 0}
        self.channels: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with stub.lock:
                    if self.path.startswith(f"/api/queues/%2F/{QUEUE}"):
                        body = json.dumps(stub.queue)
                    elif self.path.startswith("/api/channels"):
                        body = json.dumps(stub.channels)
                    else:
                        self.send_error(404)
                        return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set(self, queue: dict[str, Any], channels: list[dict[str, Any]]) -> None:
        with self.lock:
            self.queue = {"name": QUEUE, **queue}
            self.channels = channels


@pytest.fixture
def stub_operator(local: Cluster) -> Iterator[StubManagement]:
    stub = StubManagement()
    stub.thread.start()
    op = local.host_operator("operator")
    op.stop()
    env = {"BROKER_MANAGEMENT_URL": f"http://127.0.0.1:{stub.port}", "AUTOSCALE_INTERVAL_SECONDS": "1"}
    local.operator_script("start", "operator", str(op.port), env=env)
    try:
        eventually("the operator leads again", op.ready, timeout=60)
        yield stub
    finally:
        op.stop()
        op.start()
        stub.server.shutdown()
        eventually("the operator is back with its usual settings", op.ready, timeout=60)


def _pods(local: Cluster, ns: str) -> list[dict[str, Any]]:
    items = local.get("pods", namespace=ns,
                      selector=f"app.kubernetes.io/instance={STACK},app.kubernetes.io/component=pong",
                      managed_fields=True)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_scale_in_removes_the_pod_holding_the_fewest_messages(
        local: Cluster, ns: str, stub_operator: StubManagement) -> None:
    spec: dict[str, Any] = {
        "rabbitmq": {"storage": {"ephemeral": True}, "queue": QUEUE},
        "pong": {"replicas": 3,
                 "store": {"type": "postgres", "postgres": {"provisioned": {"storage": {"ephemeral": True}}}}},
    }
    local.apply(stack_doc(STACK, spec), ns)
    local.wait_ready(ns, STACK)
    pods = eventually("3 pong pods with IPs", lambda: (p := _pods(local, ns)) and len(p) == 3
                      and all(x.get("status", {}).get("podIP") for x in p) and p)
    held = dict(zip(sorted(p["metadata"]["name"] for p in pods), (30, 2, 60)))
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    assert len(set(ips.values())) == 3, ips
    least = min(held, key=held.__getitem__)
    # 92 messages held by 3 consumers, none ready: one pod is enough for a target of 1000.
    stub_operator.set(
        {"messages_ready": 0, "messages_unacknowledged": sum(held.values()), "consumers": 3},
        [{"messages_unacknowledged": n, "consumer_count": 1,
          "connection_details": {"peer_host": ips[name], "peer_port": 40000 + i}}
         for i, (name, n) in enumerate(held.items())]
        + [{"messages_unacknowledged": 0, "connection_details": {"peer_host": "10.255.0.1"}}],  # ping
    )
    spec["pong"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "targetBacklogPerReplica": 1000,
                                   "scaleDownDelaySeconds": 1}
    local.apply(stack_doc(STACK, spec), ns)

    def scaled_in() -> bool:
        # The Deployment's replicas, not status.autoscaling.reason: `ScaledIn` lasts one tick
        # (the next one says WaitingForPods while the removed pod's consumer is still counted),
        # which a slow poll on a loaded machine missed in a CI run.
        return local.get("deployment", f"{STACK}-pong", ns)["spec"].get("replicas") == 2

    eventually("the first scale-in step", scaled_in, timeout=90)
    reasons = {e.get("reason") for e in local.get("events", namespace=ns)["items"]
               if e.get("involvedObject", {}).get("name") == STACK}
    assert "ScaledIn" in reasons, reasons
    # The cost of every pod was written before the step, by the operator's own field manager.
    for pod in local.get("pods", namespace=ns, selector=f"app.kubernetes.io/instance={STACK},"
                         "app.kubernetes.io/component=pong", managed_fields=True)["items"]:
        name = pod["metadata"]["name"]
        assert pod["metadata"].get("annotations", {}).get(ANNOTATION) == str(held[name]), pod["metadata"]
        managers = {e["manager"] for e in pod["metadata"]["managedFields"]
                    if ANNOTATION in json.dumps(e.get("fieldsV1", {}))}
        assert managers == {MANAGER}, pod["metadata"]["managedFields"]
    ranked = metric_sum(local.host_operator("operator").metrics(),
                        "pingpong_operator_autoscaler_scale_in_rankings_total", outcome="ranked")
    assert ranked >= 1, "the ranking is counted"
    # The ReplicaSet controller removed the one holding the fewest.
    remaining = eventually("one pod removed", lambda: (n := {p["metadata"]["name"] for p in _pods(local, ns)})
                           and len(n) == 2 and n)
    assert least not in remaining and remaining == set(held) - {least}, (held, remaining)
