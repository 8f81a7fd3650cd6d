"""Optional APIs (issue 21, scenario 6): a stack that asks for an HTTPRoute (`gateway`) and
ServiceMonitors on a control plane that serves neither the Gateway API nor the Prometheus Operator
gets every other child applied, `Degraded=True` with `GatewayApiMissing` naming both missing CRDs,
and a Warning Event; nothing is silently ignored. Once the CRDs are installed, the operator, which
asks again on its own timer (every 30 s, never inside a reconcile), creates the route and the
monitors within a bounded wait.

The CRDs are removed for the test and put back afterwards exactly as they were (the real node's
Gateway keeps its own kinds: only HTTPRoute and ServiceMonitor are removed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_helpers import Cluster, children, eventually, stack_doc

ROUTE_CRD = "httproutes.gateway.networking.k8s.io"
MONITOR_CRD = "servicemonitors.monitoring.coreos.com"
CRD_FILES = {ROUTE_CRD: "httproutes.yaml", MONITOR_CRD: "servicemonitors.yaml"}
# operator/src/apis.rs REFRESH (30 s): the controller asks again that often. A change is seen
# within one period, then the controller restarts, lists the stacks and reconciles them.
REFRESH_SECONDS = 30
BOUND_SECONDS = 3 * REFRESH_SECONDS + 30


def _installable(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as it can be applied again (no server-set fields)."""
    meta = crd["metadata"]
    return {"apiVersion": crd["apiVersion"], "kind": crd["kind"],
            "metadata": {k: meta[k] for k in ("name", "labels", "annotations") if k in meta},
            "spec": crd["spec"]}


def _install(cluster: Cluster, saved: dict[str, dict[str, Any]]) -> None:
    for name, file in CRD_FILES.items():
        if cluster.exists("crd", name):
            continue
        if name in saved:
            cluster.apply(saved[name])
        else:
            path: Path = cluster.state_dir / "crds" / file
            assert path.exists(), f"no {path} (scripts/cluster/build.sh fetches the optional CRDs)"
            cluster.kubectl("apply", "--server-side", "-f", str(path))
        _wait_established(cluster, name)


def _wait_established(cluster: Cluster, name: str) -> None:
    """Polls until the CRD is Established. A CRD created just after the deletion of the same name
    can take long on a loaded machine (the API server tears down the old one's storage and
    instances first), so the wait is generous and a failure shows the CRD's own conditions."""
    seen: list[Any] = []

    def established() -> bool:
        conditions = (cluster.get("crd", name).get("status") or {}).get("conditions") or []
        seen.append(conditions)
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    try:
        eventually(f"CRD {name} Established", established, timeout=BOUND_SECONDS, interval=1)
    except AssertionError as error:
        raise AssertionError(f"{error}; its last conditions: {seen[-1] if seen else None}") from error


@pytest.fixture
def without_optional_crds(local: Cluster) -> Iterator[dict[str, dict[str, Any]]]:
    saved = {name: _installable(local.get("crd", name)) for name in CRD_FILES if local.exists("crd", name)}
    for name in saved:
        local.kubectl("delete", "crd", name, "--wait=true", "--timeout=120s", timeout=150)
    try:
        yield saved
    finally:
        _install(local, saved)


def test_a_missing_api_holds_back_only_its_children(
        local: Cluster, ns: str, without_optional_crds: dict[str, dict[str, Any]]) -> None:
    name = "optional"
    spec = {"rabbitmq": {"storage": {"ephemeral": True}},
            "gateway": {"parentRef": {"name": "public"}},
            "monitoring": {"serviceMonitor": True}}
    local.apply(stack_doc(name, spec), ns)

    # Reported, naming both missing CRDs. The operator may first meet the deletion as a 404 (on
    # the route's apply, or listing the stack's ServiceMonitors), with the same reason and a
    # message that names only what it met; within one refresh it knows both APIs are gone.
    def both_named() -> dict[str, Any] | None:
        degraded = local.condition(ns, name, "Degraded") or {}
        message = degraded.get("message", "")
        named = (degraded.get("status") == "True" and degraded.get("reason") == "GatewayApiMissing"
                 and ROUTE_CRD in message and MONITOR_CRD in message)
        return degraded if named else None

    cond = eventually("Degraded naming both missing CRDs", both_named, timeout=BOUND_SECONDS)
    assert "spec.monitoring.serviceMonitor" in cond["message"], cond
    # Every other child is applied.
    kinds = children(local, ns, name)
    assert kinds.get("StatefulSet") == [f"{name}-rabbitmq"], kinds
    assert sorted(kinds.get("Deployment", [])) == [f"{name}-ping", f"{name}-pong"], kinds
    assert {f"{name}-ping", f"{name}-pong", f"{name}-rabbitmq"} <= set(kinds.get("Service", [])), kinds
    assert kinds.get("NetworkPolicy"), kinds
    # A Warning Event says the same.
    events = local.get("events.events.k8s.io", namespace=ns)["items"]
    warned = [e for e in events if e.get("reason") == "GatewayApiMissing"
              and e.get("type") == "Warning" and e.get("regarding", {}).get("name") == name]
    assert warned, f"no Warning Event GatewayApiMissing: {[e.get('reason') for e in events]}"

    # The CRDs are installed: the operator notices on its own and creates what was missing.
    _install(local, without_optional_crds)
    eventually("the HTTPRoute appears", lambda: local.exists("httproute", name, ns), timeout=BOUND_SECONDS)
    eventually("the ServiceMonitors appear",
               lambda: local.get("servicemonitors", namespace=ns)["items"], timeout=BOUND_SECONDS)

    def no_longer_missing() -> bool:
        degraded = local.condition(ns, name, "Degraded") or {}
        return degraded.get("reason") not in ("GatewayApiMissing", "PrometheusOperatorMissing")

    eventually("Degraded no longer says an API is missing", no_longer_missing, timeout=60)
