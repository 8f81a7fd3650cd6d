"""ping's and pong's NetworkPolicies on a real API server: created with the stack, selecting
exactly the pods their Deployments run, egress peers that select this stack's broker, PostgreSQL
and Redis pods, updated when pong's store goes back to memory, re-created after a manual delete,
and garbage-collected with the stack.

Nothing on the local cluster enforces NetworkPolicies: kwok's pods have no network at all, and the
real node's CNI plugin (Debian's bridge + host-local) ignores them. The policies are stored and
validated by the API server, so this suite proves their shape and their life cycle, not that
traffic is dropped. A policy-enforcing network plugin would: Calico, or kube-router's
network-policy controller (both written in Go); neither runs here."""

from __future__ import annotations

from typing import Any

from e2e_helpers import Cluster, eventually, names, stack_doc

PROVISIONED = {"pong": {"store": {"type": "postgres", "postgres": {"provisioned": {}}},
                        "cache": {"provisioned": {}}}}


def _selector(match_labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def _pods(cluster: Cluster, ns: str, match_labels: dict[str, str]) -> list[str]:
    return names(cluster.get("pods", namespace=ns, selector=_selector(match_labels))["items"])


def _egress(policy: dict[str, Any]) -> dict[int, list[dict[str, str]]]:
    """Egress port → the peers' matchLabels (an empty list: any destination)."""
    out: dict[int, list[dict[str, str]]] = {}
    for rule in policy["spec"].get("egress", []):
        peers = [p["podSelector"]["matchLabels"] for p in rule.get("to", [])]
        for port in rule["ports"]:
            out.setdefault(port["port"], []).extend(peers)
    return out


def test_ping_and_pong_policies_select_their_pods_and_follow_the_stack(
        cluster: Cluster, ns: str) -> None:
    name = "np"
    cluster.apply(stack_doc(name, PROVISIONED), ns)
    cluster.wait_ready(ns, name)
    ports = {"ping": 8001, "pong": 8002}
    for component, port in ports.items():
        policy = cluster.get("networkpolicy", f"{name}-{component}", ns)
        assert policy["metadata"]["ownerReferences"][0]["name"] == name
        assert policy["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pingpong-operator"
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector == {"pingpong.dev/stack": name,
                            "pingpong.dev/role": component}, selector
        deployment = cluster.get("deployment", f"{name}-{component}", ns)
        pods = eventually(f"{component} pods running",
                          lambda d=deployment: _pods(cluster, ns, d["spec"]["selector"]["matchLabels"]))
        assert _pods(cluster, ns, selector) == pods, f"{component}: policy selects other pods"
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["spec"]["ingress"] == [{"ports": [{"port": port, "protocol": "TCP"}]}]
        egress = _egress(policy)
        assert egress[53] == [] and egress[5353] == [], egress
        servers = {5672: "rabbitmq"} | ({5432: "postgres", 6379: "redis"} if component == "pong" else {})
        assert set(egress) == {53, 5353, *servers}, egress
        for server_port, server in servers.items():
            [peer] = egress[server_port]
            server_pods = _pods(cluster, ns, peer)
            assert server_pods and all(p.startswith(f"{name}-{server}-") for p in server_pods), \
                (server_port, server_pods)

    # pong's store and cache back to in-memory: its egress no longer opens PostgreSQL and Redis.
    cluster.kubectl("patch", "pps", name, "-n", ns, "--type=json", "-p",
                    '[{"op": "remove", "path": "/spec/pong/store"},'
                    ' {"op": "remove", "path": "/spec/pong/cache"}]')
    eventually("pong's egress without PostgreSQL and Redis",
               lambda: set(_egress(cluster.get("networkpolicy", f"{name}-pong", ns)))
               == {53, 5353, 5672}, timeout=90)
    eventually("the PostgreSQL and Redis policies deleted as orphans",
               lambda: names(cluster.get("networkpolicies", namespace=ns)["items"])
               == sorted(f"{name}-{c}" for c in ("ping", "pong", "rabbitmq")), timeout=90)

    # A deleted policy is re-created (the operator watches the NetworkPolicies it owns).
    cluster.kubectl("delete", "networkpolicy", f"{name}-ping", "-n", ns)
    eventually("ping's policy re-created", lambda: cluster.exists("networkpolicy", f"{name}-ping", ns),
               timeout=90)

    cluster.kubectl("delete", "pps", name, "-n", ns, "--wait=true", "--timeout=60s")
    eventually("the garbage collector removed every NetworkPolicy",
               lambda: not cluster.get("networkpolicies", namespace=ns)["items"], timeout=90)
