"""A broker that survives losing a node: quorum queues and failover on a private three-node RabbitMQ
cluster (broker_cluster.py), with the real ping and pong binaries under load.

1. ping and pong on different nodes; the node holding the quorum queue's leader is killed -9
   mid-load: every id answered 200 is in GET /pong; every request got 200 or 503 within the client
   bound; ping and pong carry on without a restart.
2. Rolling restart of the three nodes, one by one (each after `await_online_quorum_plus_one`)
   under load: no acknowledged message lost.
3. The node ping is connected to is killed -9: ping fails over to another address and keeps
   answering 200.
4. pong with the PostgreSQL store at two replicas, one killed -9 mid-load: every acknowledged id
   is stored exactly once.

Each test prints: accepted, stored, lost (must be 0), 503s, longest unavailability. Test 4 runs
its own PostgreSQL server. Without rabbitmq-server (or the PostgreSQL server for test 4) the tests
are skipped, and fail under CI=true.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests

from broker_cluster import BrokerCluster, Load, PrivatePostgres, verify, wait_for_200s
from system_helpers import Stack, free_port, http_status, wait_until

QUORUM = {"RABBITMQ_QUEUE_TYPE": "quorum"}
PING_ORDER = [0, 1, 2]
PONG_ORDER = [1, 2, 0]


@pytest.fixture(scope="module")
def cluster(bins: dict[str, Path]) -> Iterator[BrokerCluster]:
    cluster = BrokerCluster()
    try:
        cluster.start()
        yield cluster
    except BaseException:
        print(f"\n===== cluster logs =====\n{cluster.logs()}")
        raise
    finally:
        cluster.destroy()


@pytest.fixture
def ha_stack(request: pytest.FixtureRequest, tmp_path: Path, bins: dict[str, Path],
             cluster: BrokerCluster) -> Iterator[Stack]:
    """An empty Stack on the cluster (every node up first); the test starts what it needs."""
    heal(cluster)
    stack = Stack(bins=bins, broker=cluster.broker(0), workdir=tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()
        if any(getattr(getattr(request.node, f"report_{when}", None), "failed", False)
               for when in ("setup", "call")):
            print(f"\n===== process logs of {request.node.name} =====\n{stack.logs()}")
            print(f"\n===== cluster logs =====\n{cluster.logs()}")


def heal(cluster: BrokerCluster) -> None:
    """Start every node a previous test left down; wait until all three run together."""
    for node in cluster.nodes:
        if node.beam_pid() is None:
            node.start()
            node.wait_booted()
    wait_until(lambda: len(cluster.running_nodes()) == len(cluster.nodes), 90,
               "every node back in the cluster", 1.0)


def env_for(cluster: BrokerCluster, order: list[int], extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"RABBITMQ_ADDRESSES": cluster.addresses(order), **QUORUM, **(extra or {})}


def node_in_use(url: str, order: list[int]) -> int | None:
    """Index (in the cluster) of the node a service uses, from /readyz `broker_address`."""
    try:
        body = requests.get(f"{url}/readyz", timeout=2).json()
    except (requests.RequestException, ValueError):
        return None
    position = body.get("broker_address")
    return order[position] if isinstance(position, int) and 0 <= position < len(order) else None


def start_pong_then_ping(stack: Stack, cluster: BrokerCluster,
                         pong_extra: dict[str, str] | None = None) -> None:
    """pong first, so it declares the quorum queue and its leader lands on pong's node."""
    stack.start_pong(env_for(cluster, PONG_ORDER, pong_extra))
    stack.wait_ready("pong", timeout=90)
    stack.start_ping(env_for(cluster, PING_ORDER))
    stack.wait_ready("ping", timeout=90)
    info = cluster.queue_info(stack.queue)
    assert info["type"] == "quorum", info
    assert "at-least-once" in info["arguments"] and "reject-publish" in info["arguments"], info
    assert all(n.node in info["members"] for n in cluster.nodes), f"not on every node: {info}"


def test_leader_node_killed_mid_load_loses_no_acknowledged_ping(cluster: BrokerCluster,
                                                                 ha_stack: Stack) -> None:
    stack = ha_stack
    start_pong_then_ping(stack, cluster)
    ping_node, pong_node = node_in_use(stack.ping_url, PING_ORDER), node_in_use(stack.pong_url, PONG_ORDER)
    assert (ping_node, pong_node) == (0, 1), f"ping on node {ping_node}, pong on node {pong_node}"
    ping_pid, pong_pid = stack.procs["ping"].pid, stack.procs["pong"].pid

    with Load(f"{stack.ping_url}/ping", "leader") as load:
        wait_for_200s(load, 200, 0.0, "200 pings before the kill")
        leader = cluster.leader(stack.queue)
        print(f"killing {leader.node} (index {leader.index}): quorum leader; "
              f"ping on node {ping_node}, pong on node {pong_node}")
        killed_at = time.monotonic()
        leader.kill9()
        wait_for_200s(load, 300, killed_at, "300 pings answered 200 after the leader was killed")
        new_leader = cluster.leader(stack.queue)
        assert new_leader is not leader
        wait_until(lambda: http_status(f"{stack.pong_url}/readyz") == 200, 60, "pong ready again")

    verify(stack, load, f"leader {leader.node} killed")
    assert stack.procs["ping"].pid == ping_pid and stack.procs["ping"].alive(), "ping was restarted"
    assert stack.procs["pong"].pid == pong_pid and stack.procs["pong"].alive(), "pong was restarted"


def test_rolling_restart_under_load_loses_no_acknowledged_ping(cluster: BrokerCluster,
                                                               ha_stack: Stack) -> None:
    stack = ha_stack
    start_pong_then_ping(stack, cluster)
    with Load(f"{stack.ping_url}/ping", "rolling") as load:
        wait_for_200s(load, 100, 0.0, "100 pings before the rolling restart")
        for node in cluster.nodes:
            cluster.await_quorum_plus_one(node)
            node.stop()
            node.start()
            node.wait_booted()
            restarted_at = time.monotonic()
            wait_until(lambda: len(cluster.running_nodes()) == len(cluster.nodes), 90,
                       f"{node.node} back in the cluster", 1.0)
            wait_for_200s(load, 100, restarted_at, f"100 pings after restarting {node.node}")
    for url in (stack.ping_url, stack.pong_url):
        wait_until(lambda: http_status(f"{url}/readyz") == 200, 60, f"{url} ready after the restarts")
    verify(stack, load, "rolling restart of 3 nodes")


def test_ping_fails_over_when_its_node_is_killed(cluster: BrokerCluster, ha_stack: Stack) -> None:
    stack = ha_stack
    start_pong_then_ping(stack, cluster)
    ping_node = node_in_use(stack.ping_url, PING_ORDER)
    assert ping_node is not None
    with Load(f"{stack.ping_url}/ping", "failover") as load:
        wait_for_200s(load, 100, 0.0, "100 pings before the kill")
        killed_at = time.monotonic()
        cluster.nodes[ping_node].kill9()
        wait_for_200s(load, 200, killed_at, "200 pings answered 200 after ping's node was killed")
        now = node_in_use(stack.ping_url, PING_ORDER)
        assert now is not None and now != ping_node, f"ping still reports node {now}"
    verify(stack, load, f"ping's node {cluster.nodes[ping_node].node} killed")


def test_two_postgres_pongs_one_killed_store_every_ping_once(cluster: BrokerCluster, ha_stack: Stack,
                                                            private_postgres: PrivatePostgres) -> None:
    stack = ha_stack
    database = private_postgres.create_database(f"pp_ha_{uuid.uuid4().hex[:10]}")
    store = {"PONG_STORE": "postgres", "DATABASE_URL": database}
    start_pong_then_ping(stack, cluster, store)
    second_port = free_port()
    second_env = stack.service_env(second_port, env_for(cluster, [2, 0, 1], store))
    second = stack._start("pong", [str(stack.bins["pong"])], second_env)
    wait_until(lambda: http_status(f"http://127.0.0.1:{second_port}/readyz") == 200, 90,
               "the second pong to be ready")
    with Load(f"{stack.ping_url}/ping", "pg") as load:
        wait_for_200s(load, 300, 0.0, "300 pings before the kill")
        killed_at = time.monotonic()
        stack.procs["pong"].kill()
        wait_for_200s(load, 300, killed_at, "300 pings after one pong was killed")
    assert second.alive()
    verify(stack, load, "one of two PostgreSQL pongs killed", pong_port=second_port)
