"""Confused deputy (issue scenario 7): whoever may create a PingPongStack must not read a Secret of
the namespace through the operator by naming it in `pong.cache.external.secretName` (or any other
Secret reference) and a pong image of their own. A referenced Secret is used only when it carries
the opt-in label `pingpong.dev/referable=true` (set by someone who may write the Secret) or is
listed by the cluster admin (`PINGPONG_ALLOWED_SECRETS`); otherwise the stack is rejected with a
condition and the Secret is mounted nowhere."""

from __future__ import annotations

from e2e_helpers import Cluster, stack_doc

REFERABLE = "pingpong.dev/referable"
EPHEMERAL = {"rabbitmq": {"storage": {"ephemeral": True}}}


def _mounted_anywhere(cluster: Cluster, ns: str, secret: str) -> list[str]:
    found = []
    for kind in ("deployments", "statefulsets"):
        for item in cluster.get(kind, namespace=ns)["items"]:
            text = str(item["spec"]["template"])
            if f"'{secret}'" in text:
                found.append(f"{kind}/{item['metadata']['name']}")
    return found


def test_an_unlabelled_secret_is_never_handed_to_a_stack(cluster: Cluster, ns: str) -> None:
    name = "deputy"
    cluster.kubectl("create", "secret", "generic", "team-db", "-n", ns,
                    "--from-literal=url=redis://10.0.0.1:6379/0")
    cluster.apply(stack_doc(name, {**EPHEMERAL, "pong": {"cache": {"external": {"secretName": "team-db"}}}}), ns)

    cond = cluster.wait_condition(ns, name, "Degraded", "True", "SecretNotReferable")
    assert "team-db" in cond["message"] and REFERABLE in cond["message"], cond
    ready = cluster.condition(ns, name, "Ready")
    assert ready and ready["status"] == "False", ready
    assert not _mounted_anywhere(cluster, ns, "team-db"), "the unlabelled Secret reached a pod"
    assert not cluster.exists("deployment", f"{name}-pong", ns), "a rejected stack got children"

    # The Secret's owner opts in: the stack is applied (re-checked within 60 s, or on a change).
    cluster.kubectl("label", "secret", "team-db", "-n", ns, f"{REFERABLE}=true")
    cluster.wait_ready(ns, name, timeout=150)
    assert _mounted_anywhere(cluster, ns, "team-db") == [f"deployments/{name}-pong"]
