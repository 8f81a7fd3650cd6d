"""Ownership on a shared namespace (issue scenario 1): a user's Ingress `web` and a new stack `web`
whose route has the same name. The operator leaves the Ingress unchanged (no owner reference, no
label, its own rule), says so in `Degraded` naming the object and who wrote it, still applies every
other child, and neither turning the route off nor deleting the stack deletes the user's object.
Only the documented annotation `pingpong.dev/adopt: <stack>` lets a stack take over an object that
nothing controls."""

from __future__ import annotations

from typing import Any

from e2e_helpers import Cluster, eventually, stack_doc

EPHEMERAL = {"rabbitmq": {"storage": {"ephemeral": True}}}
ADOPT = "pingpong.dev/adopt"


def _users_ingress(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"rules": [{"host": "users.example", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "users-app", "port": {"number": 80}}}}]}}]},
    }


def _assert_untouched(cluster: Cluster, ns: str, name: str) -> None:
    ingress = cluster.get("ingress", name, ns, managed_fields=True)
    meta = ingress["metadata"]
    assert not meta.get("ownerReferences"), f"the stack took the user's Ingress: {meta}"
    assert "app.kubernetes.io/managed-by" not in (meta.get("labels") or {}), meta
    assert ingress["spec"]["rules"][0]["host"] == "users.example", ingress["spec"]
    managers = {m.get("manager") for m in meta["managedFields"]}
    assert managers and "pingpong-operator" not in managers, managers


def test_a_users_object_of_a_childs_name_is_never_taken(cluster: Cluster, ns: str) -> None:
    name = "web"
    cluster.apply(_users_ingress(name), ns)
    cluster.apply(stack_doc(name, EPHEMERAL), ns)

    cond = cluster.wait_condition(ns, name, "Degraded", "True", "ChildNotOwned")
    assert f"Ingress {name}" in cond["message"] and ADOPT in cond["message"], cond
    assert "kubectl" in cond["message"], f"the message does not say who wrote it: {cond}"
    _assert_untouched(cluster, ns, name)
    for kind, child in (("deployment", f"{name}-ping"), ("deployment", f"{name}-pong"),
                        ("statefulset", f"{name}-rabbitmq")):
        assert cluster.exists(kind, child, ns), f"{kind} {child} was not applied beside the conflict"

    # The route turned off: the conflict is gone and the user's Ingress stays.
    cluster.apply(stack_doc(name, {**EPHEMERAL, "ingress": {"enabled": False}}), ns)
    cluster.wait_ready(ns, name)
    cluster.wait_condition(ns, name, "Degraded", "False", "ReconcileSucceeded")
    _assert_untouched(cluster, ns, name)

    # Deleting the stack deletes its children, not the user's object.
    cluster.kubectl("delete", "pps", "-n", ns, name, "--wait=true", "--timeout=60s")
    eventually("the stack's Deployments were collected",
               lambda: not cluster.exists("deployment", f"{name}-ping", ns), timeout=90)
    _assert_untouched(cluster, ns, name)


def test_the_adopt_annotation_hands_an_unowned_object_over(cluster: Cluster, ns: str) -> None:
    name = "adopted"
    cluster.apply(_users_ingress(name, {ADOPT: name}), ns)
    cluster.apply(stack_doc(name, EPHEMERAL), ns)
    stack = cluster.wait_ready(ns, name)

    def adopted() -> bool:
        owners = cluster.get("ingress", name, ns)["metadata"].get("ownerReferences", [])
        return any(o["uid"] == stack["metadata"]["uid"] and o.get("controller") for o in owners)

    eventually("the stack adopted the annotated Ingress", adopted, timeout=60)
    assert cluster.condition(ns, name, "Degraded")["reason"] == "ReconcileSucceeded"
