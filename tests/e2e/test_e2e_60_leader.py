"""Leader election between two operator processes on the host: exactly one reconciles; killing the
leader hands the Lease to the other within the documented time (lease 15 s + one renew period)."""

from __future__ import annotations

import time

from e2e_helpers import Cluster, eventually, metric_sum, stack_doc

# README: a standby takes over at most the lease duration (15 s) plus one of its own polls (2 s)
# after the leader stopped renewing; 20 s keeps that bound with room for a slow poll.
TAKEOVER_BOUND_SECONDS = 20 + 10  # + slack for a loaded 2-core CI machine


def _reconciles(op) -> float:  # type: ignore[no-untyped-def]
    return metric_sum(op.metrics(), "pingpong_operator_reconcile_duration_seconds_count")


def test_one_leader_and_takeover_after_a_crash(local: Cluster, ns: str) -> None:
    first = local.host_operator("operator")
    base = first.port
    second = local.host_operator("operator-standby", base + 1)
    try:
        second.start()
        # Both ready: the leader once its cache synced, the standby because it can take over.
        eventually("the leader's /readyz is 200", first.ready)
        eventually("the standby's /readyz is 200", second.ready)
        assert local.lease_holder() == first.identity
        before = _reconciles(second)
        local.apply(stack_doc("leader", {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
        local.wait_ready(ns, "leader")
        assert _reconciles(second) == before == 0, "the standby reconciled while not leading"

        first.kill()
        killed = time.monotonic()
        eventually("the standby holds the Lease", lambda: local.lease_holder() == second.identity,
                   timeout=TAKEOVER_BOUND_SECONDS + 30, interval=0.25)
        took = time.monotonic() - killed
        print(f"takeover after SIGKILL of the leader: {took:.1f} s")
        assert took <= TAKEOVER_BOUND_SECONDS, f"takeover took {took:.1f} s"
        local.kubectl("annotate", "pps", "-n", ns, "leader", "after-takeover=1")
        local.kubectl("scale", "-n", ns, "deployment/leader-ping", "--replicas=3")
        eventually("the new leader restored ping's replicas",
                   lambda: local.get("deployment", "leader-ping", ns)["spec"]["replicas"] == 1)
        # The reconcile that restored ping is counted when it ends (after its status write).
        eventually("the new leader counted its reconciles", lambda: _reconciles(second) > 0)
    finally:
        second.stop()
        first.start()
        eventually("the first operator leads again", lambda: local.lease_holder() == first.identity,
                   timeout=60)
