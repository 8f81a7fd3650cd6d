"""A three-node RabbitMQ cluster in pods that really run (the local cluster's real node), driven
through the Gateway like a user:

- a stack with `rabbitmq.replicas: 3` on Debian's RabbitMQ 3.10.8 (the only broker image built
  here) forms one cluster: its nodes find each other by the `classic_config` peer discovery the
  operator renders for RabbitMQ before 4.1, with the names the pods give themselves; the work
  queue is a quorum queue with a member on every node (a node that joined after the queue was
  declared adds itself in its postStart);
- a broker pod is lost under a paced load of POST /ping, twice: the quorum queue leader's pod
  deleted as a drain or rolling update does (its preStop waits for the quorum and drains the
  node), then the pod ping is connected to stopped at once (`--grace-period=2`, the kubelet's
  minimum: the preStop is cut short and the node killed, as in a crash). Each time every message
  acknowledged with 2xx is in GET /pong, none is stored twice, every other answer is a 503
  (counted and printed), and the pod comes back and rejoins the cluster; the stack is Ready again.

Storage: a cluster needs persistent broker storage (the operator refuses an ephemeral cluster),
and the real node has no volume provisioner of its own (kwok's default StorageClass only writes
PersistentVolume objects whose hostPath directories the kubelet creates root-owned, which the
broker's user cannot write). The test provisions three local PersistentVolumes on the node, as an
administrator provisions local disks; the kubelet gives them the pod's fsGroup. Their directories
live under the cluster's node directory, which `make cluster-down` removes.

Every wait and the load are bounded in time and count; the assertions are about answers, messages
and cluster membership, never about how long something took (the durations are printed).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

from e2e_helpers import Cluster, eventually, unique
from real_pods import (Load, exec_in, local_volumes, pods, post_ok, ready_pods, real_stack,
                       stored_message_list)

REPLICAS = 3


def _node_names(name: str, ns: str) -> set[str]:
    """The Erlang names the broker pods give themselves (RABBITMQ_NODENAME, long names)."""
    return {f"rabbit@{name}-rabbitmq-{i}.{name}-rabbitmq-nodes.{ns}" for i in range(REPLICAS)}


def _cluster_status(cluster: Cluster, ns: str, pod: str) -> dict[str, Any]:
    out = exec_in(cluster, ns, pod, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json")
    return json.loads(out)


def _running_nodes(cluster: Cluster, ns: str, pod: str) -> set[str]:
    return set(_cluster_status(cluster, ns, pod).get("running_nodes") or [])


def _queues(cluster: Cluster, ns: str, pod: str) -> dict[str, dict[str, Any]]:
    out = exec_in(cluster, ns, pod, "rabbitmqctl", "-q", "list_queues", "name", "type", "leader",
                  "members", "online", "--formatter", "json")
    return {q["name"]: q for q in json.loads(out)}


def _broker_pod(name: str, node: str) -> str:
    """The pod of an Erlang node name (`rabbit@<pod>.<service>.<namespace>`)."""
    return node.split("@", 1)[1].split(".", 1)[0]


def test_a_three_node_broker_forms_one_cluster_and_loses_a_pod_under_load(cluster: Cluster,
                                                                           real_ns: str) -> None:
    ns, name = real_ns, "ha"
    url = cluster.gateway_url
    assert url is not None
    storage_class = f"e2e-local-{ns}"
    volumes = local_volumes(cluster, ns, storage_class, REPLICAS, "broker")
    try:
        _scenario(cluster, ns, name, url, storage_class)
    finally:
        # Released once the namespace (and with it the claims) is gone.
        cluster.kubectl("delete", "pv", *volumes, "--wait=false", "--ignore-not-found", check=False)


def _scenario(cluster: Cluster, ns: str, name: str, url: str, storage_class: str) -> None:
    started = time.monotonic()
    host = real_stack(cluster, ns, name, {"rabbitmq": {
        "image": cluster.local_image("rabbitmq"), "replicas": REPLICAS,
        "storage": {"storageClassName": storage_class, "size": "1Gi"}}})
    formed_after = time.monotonic() - started
    print(f"\nbroker cluster: formed and Ready {formed_after:.0f} s after apply")
    expected = _node_names(name, ns)

    # One cluster of three, in the words of every node.
    brokers = sorted(p["metadata"]["name"] for p in ready_pods(cluster, ns, "broker"))
    assert brokers == [f"{name}-rabbitmq-{i}" for i in range(REPLICAS)], brokers
    for pod in brokers:
        status = _cluster_status(cluster, ns, pod)
        assert set(status["running_nodes"]) == expected, (pod, status)
        assert set(status["disk_nodes"]) == expected, (pod, status)
        assert not status.get("partitions"), (pod, status)

    # The work queue is a quorum queue with a member on every node.
    post_ok(url, host, unique("warm-up"))
    (ping,) = pods(cluster, ns, "ping")
    env = {e["name"]: e.get("value") for e in ping["spec"]["containers"][0].get("env", [])}
    assert env.get("RABBITMQ_QUEUE_TYPE") == "quorum", env
    # A node that joined after the queue was declared adds itself (its postStart's grow).
    queue = eventually("the work queue declared with a member on every node", lambda: (
        q if (q := _queues(cluster, ns, brokers[0]).get("pingpong"))
        and set(q["members"]) == expected and set(q["online"]) == expected else None),
        timeout=180, interval=2)
    assert queue["type"] == "quorum", queue

    # Lose a broker pod under load, twice: the queue leader's pod deleted as a drain or a
    # rolling update does (its preStop waits for the quorum and drains the node), then the pod
    # ping is connected to stopped at once (2 s grace, the kubelet's minimum: the preStop is cut
    # short and the node is killed, as in a crash).
    leader = _broker_pod(name, queue["leader"])
    _lose_a_broker(cluster, ns, name, url, host, leader, "the quorum queue's leader", grace=None)
    ping_ip = pods(cluster, ns, "ping")[0]["status"]["podIP"]
    connected = _connection_pod(cluster, ns, name, brokers[0], ping_ip)
    _lose_a_broker(cluster, ns, name, url, host, connected, "the node ping is connected to", grace=2)

    cluster.wait_ready(ns, name, timeout=300)
    queue = _queues(cluster, ns, brokers[0])["pingpong"]
    assert set(queue["online"]) == expected, queue


def _connection_pod(cluster: Cluster, ns: str, name: str, pod: str, peer_ip: str) -> str:
    """The broker pod holding the AMQP connection that comes from `peer_ip` (the node's name is in
    the connection's pid, `<rabbit@<pod>.<service>.<namespace>.N.N.N>`)."""
    def find() -> str | None:
        # The table, not JSON: the JSON formatter of 3.10 prints pids as #PID<...> without the
        # node and addresses as IPv6 tuples.
        out = exec_in(cluster, ns, pod, "rabbitmqctl", "-q", "list_connections", "--no-table-headers",
                      "pid", "peer_host")
        for line in out.splitlines():
            pid, _, peer = line.partition("\t")
            found = re.search(rf"<rabbit@({re.escape(name)}-rabbitmq-\d+)\.", pid)
            if peer.strip() == peer_ip and found:
                return found.group(1)
        return None

    return eventually(f"the AMQP connection from {peer_ip}", find, timeout=60, interval=2)


def _lose_a_broker(cluster: Cluster, ns: str, name: str, url: str, host: str, victim: str, role: str,
                   grace: int | None) -> None:
    """Delete the broker pod `victim` while POST /ping runs; check that it comes back and rejoins,
    that every acknowledged message is stored once, and that every other answer is a 503."""
    expected = _node_names(name, ns)
    (victim_pod,) = [p for p in pods(cluster, ns, "broker") if p["metadata"]["name"] == victim]
    survivor = next(f"{name}-rabbitmq-{i}" for i in range(REPLICAS) if f"{name}-rabbitmq-{i}" != victim)
    load = Load(url, host, unique("ha")).start()
    try:
        load.wait_acked(50)
        deleted = time.monotonic()
        grace_args = [] if grace is None else [f"--grace-period={grace}"]
        cluster.kubectl("-n", ns, "delete", "pod", victim, "--wait=false", *grace_args)
        eventually(f"broker pod {victim} replaced and Ready", lambda: any(
            p["metadata"]["name"] == victim and p["metadata"]["uid"] != victim_pod["metadata"]["uid"]
            for p in ready_pods(cluster, ns, "broker")), timeout=900, interval=2)
        ready_after = time.monotonic() - deleted
        eventually(f"{victim} rejoined: all {REPLICAS} nodes running together",
                   lambda: _running_nodes(cluster, ns, survivor) == expected
                   and _running_nodes(cluster, ns, victim) == expected, timeout=300, interval=2)
        rejoined_after = time.monotonic() - deleted
        load.wait_acked(50, timeout=300)
    finally:
        load.halt()

    answered = sum(load.statuses.values())
    others = {code: n for code, n in load.statuses.items() if not 200 <= code < 300 and code != 503}
    how = "deleted" if grace is None else f"deleted with --grace-period={grace}"
    print(f"\nbroker cluster: {how} {victim} ({role}); {answered} POST /ping: {len(load.acked)} "
          f"acknowledged, {load.statuses[503]} answered 503, other answers {others or 'none'}; pod "
          f"Ready again {ready_after:.0f} s and rejoined {rejoined_after:.0f} s after the delete")
    assert not others, f"answers other than 2xx and 503: {others}; {load.failures[:5]}"

    acked = set(load.acked)
    assert len(acked) == len(load.acked)
    stored = eventually(f"all {len(acked)} acknowledged messages in GET /pong",
                        lambda: (s := stored_message_list(url, host)) and acked <= set(s) and s,
                        timeout=180, interval=2)
    twice = {m: n for m, n in Counter(stored).items() if n > 1}
    assert not twice, f"messages stored more than once: {dict(list(twice.items())[:5])}"
    print(f"broker cluster: 0 of {len(acked)} acknowledged messages lost, none stored twice")
