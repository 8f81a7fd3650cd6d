"""Stacks reach Ready on a real API server: `kubectl wait --for=condition=Ready`, status for every
component and observedGeneration, Events on the stack; the full stack with a provisioned PostgreSQL
and Redis, a Gateway API HTTPRoute and ServiceMonitors."""

from __future__ import annotations

import secrets

from e2e_helpers import SAMPLES, Cluster, children, load_docs, set_route_status, stack_doc


def _sample(name: str) -> dict:
    doc = load_docs(SAMPLES / name)[0]
    doc["metadata"].pop("namespace", None)
    return doc


def test_minimal_stack_becomes_ready_with_status_and_events(cluster: Cluster, ns: str) -> None:
    doc = _sample("minimal.yaml")
    name = doc["metadata"]["name"]
    cluster.apply(doc, ns)
    stack = cluster.wait_ready(ns, name)
    status = stack["status"]
    assert status["observedGeneration"] == stack["metadata"]["generation"]
    for component in ("ping", "pong", "rabbitmq"):
        assert status[component]["readyReplicas"] == status[component]["replicas"] >= 1, status
    types = {c["type"]: c for c in status["conditions"]}
    assert set(types) >= {"Ready", "Progressing", "Degraded", "Paused"}, types
    assert types["Ready"]["reason"] == "AllComponentsReady"
    assert types["Degraded"]["status"] == "False"
    secret = status["credentialsSecret"]
    assert cluster.exists("secret", secret, ns)
    kinds = children(cluster, ns, name)
    assert kinds.get("StatefulSet") == [f"{name}-rabbitmq"], kinds
    assert sorted(kinds.get("Deployment", [])) == [f"{name}-ping", f"{name}-pong"], kinds
    assert kinds.get("Ingress") == [name], kinds
    # The claim the StatefulSet asked for was provisioned and bound (kwok's volume stages).
    pvcs = cluster.get("pvc", namespace=ns)["items"]
    assert pvcs and all(p["status"].get("phase") == "Bound" for p in pvcs), pvcs
    events = cluster.get("events", namespace=ns)["items"]
    on_stack = [e for e in events if (e.get("involvedObject") or e.get("regarding") or {}).get("name") == name]
    assert on_stack, f"no Event on the stack; events: {[e.get('reason') for e in events]}"


def test_full_stack_with_provisioned_store_cache_gateway_and_monitors(cluster: Cluster, ns: str) -> None:
    crds = sorted((cluster.state_dir / "crds").glob("*.yaml"))
    if cluster.local:
        assert crds, f"no optional CRDs in {cluster.state_dir / 'crds'} (scripts/cluster/build.sh)"
        for crd in crds:
            cluster.kubectl("apply", "--server-side", "-f", str(crd))
        for crd in ("httproutes.gateway.networking.k8s.io", "servicemonitors.monitoring.coreos.com"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    name = "full"
    cluster.kubectl("create", "secret", "generic", "full-broker", "-n", ns,
                    "--from-literal=username=pingpong", f"--from-literal=password={secrets.token_hex(16)}")
    cluster.kubectl("label", "secret", "full-broker", "-n", ns, "pingpong.dev/referable=true")
    spec = {
        "ping": {"replicas": 2},
        "pong": {"replicas": 2,
                 "store": {"type": "postgres", "postgres": {"provisioned": {"storage": {"size": "2Gi"}}}},
                 "cache": {"provisioned": {}}},
        "rabbitmq": {"replicas": 3, "queue": "orders", "credentialsSecret": "full-broker"},
        "ingress": {"enabled": True, "host": f"{ns}.example.com"},
        "gateway": {"parentRef": {"name": "public", "namespace": "gateway-system"},
                    "hostname": f"{ns}.example.com"},
        "monitoring": {"serviceMonitor": True},
    }
    cluster.apply(stack_doc(name, spec), ns)
    # No Gateway controller serves the kwok nodes: report the route accepted as one would
    # (Ready waits for it; tests/e2e/test_e2e_52_pod_truth.py covers the refusals).
    set_route_status(cluster, ns, name, spec["gateway"]["parentRef"])
    stack = cluster.wait_ready(ns, name, timeout=240)
    status = stack["status"]
    assert status["rabbitmq"]["readyReplicas"] == 3, status
    assert status["ping"]["readyReplicas"] == 2 and status["pong"]["readyReplicas"] == 2, status
    assert status["store"]["ready"] is True, status["store"]
    assert status["cache"]["ready"] is True, status["cache"]
    assert status["credentialsSecret"] == "full-broker"
    kinds = children(cluster, ns, name)
    assert sorted(kinds.get("StatefulSet", [])) == sorted(
        [f"{name}-rabbitmq", f"{name}-postgres"]), kinds
    assert f"{name}-redis" in kinds.get("Deployment", []), kinds
    assert cluster.exists("httproute", name, ns)
    monitors = cluster.get("servicemonitors", namespace=ns)["items"]
    assert monitors, "no ServiceMonitor for a stack with monitoring.serviceMonitor"
