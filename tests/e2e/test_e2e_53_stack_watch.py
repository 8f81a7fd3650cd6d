"""Only changes to the stack itself trigger a reconcile, never a status write (issue 21, scenario
9): a write to `status.autoscaling` (what the autoscaler does on every decision) leaves the operator
silent, while an annotation, the documented way to force a reconcile, makes it reconcile at once.
The operator's requests about the namespace are read from the API server's audit log."""

from __future__ import annotations

import json
import time

from e2e_helpers import Cluster, eventually, operator_requests_about, stack_doc

QUIET_SECONDS = 10


def test_a_status_write_does_not_trigger_a_reconcile(local: Cluster, ns: str) -> None:
    name = "watched"
    local.apply(stack_doc(name, {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
    local.wait_ready(ns, name)
    # Ready: the next periodic reconcile is minutes away; let the last child events settle.
    eventually("no request about the namespace for 3 s",
               lambda: not operator_requests_about(local, ns, time.time() - 3), timeout=60)
    start = time.time()
    status = {"status": {"autoscaling": {
        "currentReplicas": 1, "desiredReplicas": 1, "backlog": 0, "consumers": 1,
        "reason": "Steady", "message": "written by the test as the autoscaler would"}}}
    local.kubectl("patch", "pps", name, "-n", ns, "--subresource=status", "--type=merge",
                  "-p", json.dumps(status))
    time.sleep(QUIET_SECONDS)
    seen = operator_requests_about(local, ns, start)
    assert seen == [], f"a status write triggered a reconcile: {seen}"
    # The control: a change to the stack's metadata does reconcile it.
    start = time.time()
    local.kubectl("annotate", "pps", name, "-n", ns, f"reconcile={int(start)}", "--overwrite")
    # (It reads the stack's Secrets; it writes nothing when nothing changed, see test_e2e_57.)
    eventually("a reconcile after the annotation", lambda: operator_requests_about(local, ns, start))
