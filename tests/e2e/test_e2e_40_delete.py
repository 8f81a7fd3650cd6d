"""Deleting a stack: the garbage collector removes its children (the broker's claims go with its
StatefulSet, `whenDeleted: Delete`), what the README documents as kept (a provisioned PostgreSQL's
claim and credentials) stays, and re-creating the stack under the same name comes back Ready with
what it kept."""

from __future__ import annotations

from e2e_helpers import Cluster, eventually, stack_doc

POSTGRES = {"pong": {"store": {"type": "postgres", "postgres": {"provisioned": {}}}}}


def _delete_stack(cluster: Cluster, ns: str, name: str) -> None:
    cluster.kubectl("delete", "pps", "-n", ns, name, "--wait=true", "--timeout=60s")


def test_delete_collects_children_and_the_broker_claims(cluster: Cluster, ns: str) -> None:
    name = "gc"
    cluster.apply(stack_doc(name), ns)
    cluster.wait_ready(ns, name)
    owned = {kind: [i["metadata"]["name"] for i in cluster.get(kind, namespace=ns)["items"]
                    if i["metadata"].get("ownerReferences")]
             for kind in ("statefulsets", "deployments", "services", "configmaps", "ingresses",
                          "networkpolicies", "secrets")}
    assert owned["statefulsets"] and owned["deployments"] and owned["services"], owned
    claims = [p["metadata"]["name"] for p in cluster.get("pvc", namespace=ns)["items"]]
    assert claims == [f"data-{name}-rabbitmq-0"], claims
    _delete_stack(cluster, ns, name)

    def collected() -> bool:
        return all(not any(i["metadata"].get("ownerReferences", [{}])[0].get("name") == name
                           for i in cluster.get(kind, namespace=ns)["items"]
                           if i["metadata"].get("ownerReferences"))
                   for kind in owned)

    eventually("the garbage collector removed every child", collected, timeout=90)
    eventually("the broker's claim deleted with its StatefulSet (whenDeleted: Delete)",
               lambda: not cluster.get("pvc", namespace=ns)["items"], timeout=90)
    cluster.apply(stack_doc(name), ns)
    cluster.wait_ready(ns, name)
    pvc = cluster.get("pvc", claims[0], ns)
    assert pvc["status"]["phase"] == "Bound"



def test_recreated_stack_reuses_the_kept_postgres_credentials(cluster: Cluster, ns: str) -> None:
    """The data directory on the kept claim only opens with the password it was initialised with,
    so the provisioned PostgreSQL's credentials must survive a delete of the stack."""
    name = "keep"
    cluster.apply(stack_doc(name, POSTGRES), ns)
    cluster.wait_ready(ns, name)
    secret = f"{name}-postgres-credentials"
    before = cluster.get("secret", secret, ns)["data"]
    _delete_stack(cluster, ns, name)
    eventually("the postgres StatefulSet collected",
               lambda: not cluster.exists("statefulset", f"{name}-postgres", ns), timeout=90)
    assert cluster.exists("pvc", f"data-{name}-postgres-0", ns)
    assert cluster.exists("secret", secret, ns), \
        "the PostgreSQL credentials were deleted while the data they open was kept"
    cluster.apply(stack_doc(name, POSTGRES), ns)
    cluster.wait_ready(ns, name)
    assert cluster.get("secret", secret, ns)["data"] == before, "the PostgreSQL password changed"
