"""A steady-state reconcile writes nothing (issue 21, fleet scale): once a stack is Ready, a
reconcile forced by an annotation, and one triggered by a status-only change of a child (what the
workload controllers write all the time), read what they need and patch no child, create nothing,
write no status. A child edited behind the operator is still applied again at once. The operator's
requests about the namespace are read from the API server's audit log."""

from __future__ import annotations

import json
import time

from e2e_helpers import Cluster, eventually, operator_requests_about, stack_doc

WRITES = ("patch ", "create ", "update ", "delete ")


def _settled(cluster: Cluster, ns: str) -> None:
    eventually("no request about the namespace for 3 s",
               lambda: not operator_requests_about(cluster, ns, time.time() - 3), timeout=90)


def _reconciled_without_writes(cluster: Cluster, ns: str, start: float, what: str) -> None:
    # The reconcile reads the stack's Secrets and its workloads: a request shows it ran.
    eventually(f"a reconcile after {what}", lambda: operator_requests_about(cluster, ns, start), timeout=90)
    _settled(cluster, ns)
    seen = operator_requests_about(cluster, ns, start)
    writes = [r for r in seen if r.startswith(WRITES)]
    assert writes == [], f"the reconcile after {what} wrote: {writes} (all requests: {seen})"


def test_a_steady_state_reconcile_writes_nothing(local: Cluster, ns: str) -> None:
    name = "steady"
    local.apply(stack_doc(name, {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
    local.wait_ready(ns, name)
    _settled(local, ns)

    start = time.time()
    local.kubectl("annotate", "pps", name, "-n", ns, f"reconcile={int(start)}", "--overwrite")
    _reconciled_without_writes(local, ns, start, "an annotation")

    # A status-only change of a child triggers a reconcile through the child watch; its
    # generation is unchanged, so nothing is applied.
    start = time.time()
    condition = {"type": "E2ETouched", "status": "True", "reason": "Test", "message": "status only"}
    local.kubectl("patch", "deployment", f"{name}-ping", "-n", ns, "--subresource=status", "--type=json",
                  "-p", json.dumps([{"op": "add", "path": "/status/conditions/-", "value": condition}]))
    _reconciled_without_writes(local, ns, start, "a status-only change of the ping Deployment")
    local.wait_ready(ns, name)

    # A hand edit is still undone at once (the child's new generation differs from the applied one).
    start = time.time()
    local.kubectl("scale", "-n", ns, f"deployment/{name}-ping", "--replicas=3")
    eventually("the ping Deployment back at 1 replica",
               lambda: local.get("deployment", f"{name}-ping", ns)["spec"]["replicas"] == 1)
    # Only that child is written (the stack's status may follow the rollout).
    patched = {r for r in operator_requests_about(local, ns, start)
               if r.startswith("patch ") and not r.startswith("patch pingpongstacks/")}
    assert patched == {f"patch deployments/{name}-ping"}, patched
    local.wait_ready(ns, name)
