"""Pause, a spec that passes admission but not the operator's own validation, and a missing
referenced Secret each end in the documented condition and reason, without a hot loop: the
operator's requests about the namespace are counted in the API server's audit log."""

from __future__ import annotations

import time

from e2e_helpers import Cluster, operator_requests_about, stack_doc

EPHEMERAL = {"rabbitmq": {"storage": {"ephemeral": True}}}
QUIET_SECONDS = 20
# A stuck stack may be re-checked (missing references every 60 s); a hot loop makes dozens.
MAX_REQUESTS_WHILE_STUCK = 4


def _assert_quiet(cluster: Cluster, ns: str) -> None:
    if not cluster.local:
        return
    start = time.time()
    time.sleep(QUIET_SECONDS)
    seen = operator_requests_about(cluster, ns, start)
    assert len(seen) <= MAX_REQUESTS_WHILE_STUCK, f"hot loop: {len(seen)} requests in {QUIET_SECONDS} s: {seen}"


def test_paused_stack_writes_nothing(cluster: Cluster, ns: str) -> None:
    name = "paused"
    cluster.apply(stack_doc(name, {**EPHEMERAL, "paused": True}), ns)
    cluster.wait_condition(ns, name, "Paused", "True", "PausedBySpec")
    assert not cluster.exists("deployment", f"{name}-ping", ns), "a paused stack got children"
    _assert_quiet(cluster, ns)
    cluster.apply(stack_doc(name, {**EPHEMERAL, "paused": False}), ns)
    cluster.wait_ready(ns, name)
    cluster.wait_condition(ns, name, "Paused", "False", "NotPaused")


def test_invalid_spec_is_degraded_without_retrying(cluster: Cluster, ns: str) -> None:
    # Admission accepts a 60-character name; the derived child names exceed 63 characters.
    name = "n" * 60
    cluster.apply(stack_doc(name, EPHEMERAL), ns)
    cond = cluster.wait_condition(ns, name, "Degraded", "True", "NameTooLong")
    assert name in cond["message"] or "63" in cond["message"], cond
    ready = cluster.condition(ns, name, "Ready")
    assert ready and ready["status"] == "False", ready
    _assert_quiet(cluster, ns)


def test_missing_secret_is_reported_and_resolved(cluster: Cluster, ns: str) -> None:
    name = "nosecret"
    cluster.apply(stack_doc(name, {**EPHEMERAL, "rabbitmq": {"storage": {"ephemeral": True},
                                                              "credentialsSecret": "later"}}), ns)
    cond = cluster.wait_condition(ns, name, "Degraded", "True", "CredentialsSecretMissing")
    assert "later" in cond["message"], cond
    _assert_quiet(cluster, ns)
    cluster.kubectl("create", "secret", "generic", "later", "-n", ns,
                    "--from-literal=username=u", "--from-literal=password=a-long-enough-password")
    cluster.kubectl("label", "secret", "later", "-n", ns, "pingpong.dev/referable=true")
    # The operator re-checks missing references every 60 s (or on a change of the stack).
    cluster.wait_ready(ns, name, timeout=120)
