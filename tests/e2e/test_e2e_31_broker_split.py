"""A broker node that starts a cluster of its own never leaves the stack Ready=True (the local
cluster's real node, Debian's RabbitMQ 3.10.8 with `classic_config` peer discovery):

- a stack with `rabbitmq.replicas: 3` forms one cluster, and the operator's broker membership
  check says so (`status.brokerCluster.state: Clustered`, every pod's view listed);
- node 2 is made a blank node that finds no running peer within its discovery window, as after a
  wiped volume or a scale-up while every other node is down: it is forgotten by the cluster
  (`rabbitmqctl forget_cluster_node`), the two others stop their application, it is reset and
  started again; after its discovery window (10 × 3 s) it starts a cluster of its own, and the
  two others start again as a cluster of two. Every pod is Ready (AMQP accepts connections), so
  replica counts and pod conditions alone would call the stack Ready;
- the stack goes `Ready=False` with reason `BrokerPartitioned`, naming the lone pod and what
  each pod sees, `status.brokerCluster.state: Partitioned`, and a Warning Event says the same;
- node 2 is healed (`stop_app`, `reset`, `join_cluster` with node 0, `start_app`): the check finds
  one cluster again, and the stack returns to `Ready=True`.

The operator runs on the host and reads each broker pod's management API at its pod IP (the host
has a route to the real node's pod range, as an operator in a cluster reaches pods). Every wait is
bounded; the assertions are about conditions and cluster membership, never about timings.
"""

from __future__ import annotations

import json
import time
from typing import Any

from e2e_helpers import Cluster, eventually
from real_pods import exec_in, local_volumes, ready_pods, real_stack

REPLICAS = 3
# Long enough for a blank node's discovery window (10 × 3 s) and a boot on a busy machine.
BOOT_TIMEOUT = 300


def _node(name: str, ns: str, i: int) -> str:
    """The Erlang name broker pod `i` gives itself (RABBITMQ_NODENAME, long names)."""
    return f"rabbit@{name}-rabbitmq-{i}.{name}-rabbitmq-nodes.{ns}"


def _running_nodes(cluster: Cluster, ns: str, pod: str) -> set[str]:
    out = exec_in(cluster, ns, pod, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json")
    return set(json.loads(out).get("running_nodes") or [])


def _ctl(cluster: Cluster, ns: str, pod: str, *args: str) -> None:
    exec_in(cluster, ns, pod, "rabbitmqctl", *args, timeout=BOOT_TIMEOUT)


def _broker_cluster(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return (cluster.stack(ns, name).get("status") or {}).get("brokerCluster") or {}


def test_a_broker_node_alone_in_its_own_cluster_makes_the_stack_not_ready(cluster: Cluster,
                                                                           real_ns: str) -> None:
    ns, name = real_ns, "split"
    storage_class = f"e2e-local-{ns}"
    volumes = local_volumes(cluster, ns, storage_class, REPLICAS, "broker")
    try:
        _scenario(cluster, ns, name, storage_class)
    finally:
        # Released once the namespace (and with it the claims) is gone.
        cluster.kubectl("delete", "pv", *volumes, "--wait=false", "--ignore-not-found", check=False)


def _scenario(cluster: Cluster, ns: str, name: str, storage_class: str) -> None:
    started = time.monotonic()
    real_stack(cluster, ns, name, {"rabbitmq": {
        "image": cluster.local_image("rabbitmq"), "replicas": REPLICAS,
        "storage": {"storageClassName": storage_class, "size": "1Gi"}}})
    pod = [f"{name}-rabbitmq-{i}" for i in range(REPLICAS)]
    node = [_node(name, ns, i) for i in range(REPLICAS)]
    everyone = set(node)
    assert _running_nodes(cluster, ns, pod[0]) == everyone

    # The check reads every pod's view and finds one cluster.
    clustered = eventually("status.brokerCluster Clustered with every pod's view", lambda: (
        b if (b := _broker_cluster(cluster, ns, name)).get("state") == "Clustered"
        and [v["pod"] for v in b.get("pods", [])] == pod
        and all(set(v["runningNodes"]) == everyone for v in b["pods"]) else None),
        timeout=180, interval=2)
    print(f"\nbroker split: Clustered reported {time.monotonic() - started:.0f} s after apply: "
          f"{clustered['message']}")

    # Node 2 becomes a blank node that finds no running peer: forgotten by the cluster, the others
    # stopped, reset, started again: it starts a cluster of its own after its discovery window.
    _ctl(cluster, ns, pod[2], "stop_app")
    _ctl(cluster, ns, pod[0], "forget_cluster_node", node[2])
    _ctl(cluster, ns, pod[1], "stop_app")
    _ctl(cluster, ns, pod[0], "stop_app")  # the last one down starts first without waiting
    _ctl(cluster, ns, pod[2], "force_reset")
    split_at = time.monotonic()
    _ctl(cluster, ns, pod[2], "start_app")
    _ctl(cluster, ns, pod[0], "start_app")
    _ctl(cluster, ns, pod[1], "start_app")
    assert _running_nodes(cluster, ns, pod[2]) == {node[2]}, "node 2 is alone in its own cluster"
    assert _running_nodes(cluster, ns, pod[0]) == {node[0], node[1]}
    eventually("every broker pod Ready (AMQP accepts connections on each)", lambda: sorted(
        p["metadata"]["name"] for p in ready_pods(cluster, ns, "broker")) == pod,
        timeout=BOOT_TIMEOUT, interval=2)

    # Never Ready=True with a split broker: the condition names the lone pod and what it sees.
    cluster.wait_condition(ns, name, "Ready", "False", reason="BrokerPartitioned", timeout=BOOT_TIMEOUT)
    print(f"broker split: Ready=False BrokerPartitioned {time.monotonic() - split_at:.0f} s after "
          f"node 2 was reset")
    # The first report may come from a tick that read a pod while it was still starting; the next
    # ticks of the check (every few seconds) see all three pods Ready and name both sides fully.
    lone = (f"pod {pod[2]} sees a cluster of 1 running node(s) ({pod[2]}) without ready pod(s) "
            f"{pod[0]}, {pod[1]}")

    seen: list[Any] = []

    def settled() -> str | None:
        ready = cluster.condition(ns, name, "Ready")
        seen.append(ready)
        message = (ready or {}).get("message", "")
        if ready and ready["reason"] == "BrokerPartitioned" and lone in message \
                and f"without ready pod(s) {pod[2]}" in message:
            return message
        return None

    try:
        message = eventually(f"Ready=False names both sides of the split ({lone})", settled,
                             timeout=BOOT_TIMEOUT, interval=2)
    except AssertionError as error:
        raise AssertionError(f"{error}; last Ready condition: {seen[-1] if seen else None}") from error
    print(f"broker split: {message}")
    degraded = cluster.condition(ns, name, "Degraded")
    assert degraded and degraded["status"] == "True" and degraded["reason"] == "BrokerPartitioned", degraded
    split = _broker_cluster(cluster, ns, name)
    assert split["state"] == "Partitioned", split
    views = {v["pod"]: set(v["runningNodes"]) for v in split["pods"]}
    assert views == {pod[0]: {node[0], node[1]}, pod[1]: {node[0], node[1]}, pod[2]: {node[2]}}, views
    events = cluster.get("events", namespace=ns)["items"]
    warned = [e for e in events if e.get("reason") == "BrokerPartitioned" and e.get("type") == "Warning"]
    assert warned, [(e.get("reason"), e.get("note") or e.get("message")) for e in events]
    # It stays so: a later look still finds Ready=False (no flapping back on its own).
    time.sleep(20)
    still = cluster.condition(ns, name, "Ready")
    assert still and still["status"] == "False" and still["reason"] == "BrokerPartitioned", still

    # Healed: node 2 joins the cluster of the two others; the stack is Ready again.
    _ctl(cluster, ns, pod[2], "stop_app")
    _ctl(cluster, ns, pod[2], "reset")
    _ctl(cluster, ns, pod[2], "join_cluster", node[0])
    healed_at = time.monotonic()
    _ctl(cluster, ns, pod[2], "start_app")
    eventually("all three nodes running together again", lambda: all(
        _running_nodes(cluster, ns, p) == everyone for p in pod), timeout=BOOT_TIMEOUT, interval=2)
    cluster.wait_ready(ns, name, timeout=BOOT_TIMEOUT)
    print(f"broker split: Ready=True again {time.monotonic() - healed_at:.0f} s after node 2 rejoined")
    healed = _broker_cluster(cluster, ns, name)
    assert healed["state"] == "Clustered", healed
    events = cluster.get("events", namespace=ns)["items"]
    assert any(e.get("reason") == "BrokerClustered" for e in events), \
        [(e.get("reason"), e.get("note") or e.get("message")) for e in events]
