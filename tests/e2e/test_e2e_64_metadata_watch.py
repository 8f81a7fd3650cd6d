"""The child watches transfer metadata only (issue 21, scenario 9), on the real API server.

What: the watch of every child kind the operator watches starts with a list, and each of those
lists comes back from the API server as a `PartialObjectMetadataList` whose items are
`PartialObjectMetadata`: metadata only, no spec, data or status. The items include this stack's
children, so the lists carried real objects.

Why: a watch of whole objects holds every managed Deployment's, StatefulSet's and ConfigMap's
spec and status in the operator's memory and sends them over the wire on every list and event,
while the owner reference in the metadata is all the controller reads. The unit test
`child_watches_are_metadata_only` (operator/src/controller.rs) proves what kube asks for (the
`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` header), not what an
API server answers.

How: the local control plane's audit policy (scripts/cluster/up.sh) logs the response of every
list of a child kind by the ServiceAccounts of pingpong-system, as the API server wrote it to the
client (after the metadata-only transform). With a stack Ready, the test restarts the host
operator, so its watches list again with the stack's children in them, and reads those lists from
the audit log: one or more of every watched kind (Secrets are read by name, never listed;
optional kinds when their CRDs are served), each metadata-only. The control: a throw-away
ServiceAccount of pingpong-system lists the stack's Deployments twice, as kubectl does (whole
objects) and with kube's metadata-only header; the same check must refuse the first and accept
the second, so the log shows the difference on this API server and the test can fail.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime
from typing import Any

from e2e_helpers import (MANAGED_BY, OPERATOR_NAMESPACE, Cluster, eventually, operator_user,
                         stack_doc)

# What kube sends for an `Api<PartialObjectMeta<K>>` list or watch.
METADATA_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# The child kinds always watched (ChildKind::ALL without Secret and the optional APIs), by the
# audit log's resource name.
BUILT_IN = {"configmaps", "services", "statefulsets", "deployments", "networkpolicies",
            "poddisruptionbudgets", "ingresses"}
# The optional child kinds, watched only when their CRD is served: resource → CRD.
OPTIONAL = {"httproutes": "httproutes.gateway.networking.k8s.io",
            "servicemonitors": "servicemonitors.monitoring.coreos.com",
            "prometheusrules": "prometheusrules.monitoring.coreos.com",
            "scaledobjects": "scaledobjects.keda.sh",
            "triggerauthentications": "triggerauthentications.keda.sh"}
CHILD_RESOURCES = BUILT_IN | set(OPTIONAL)
# The only top-level fields of a PartialObjectMetadata item.
METADATA_FIELDS = {"kind", "apiVersion", "metadata"}
STALE_POLICY = ("the API server logs this list without its response: it runs an audit policy "
                "older than scripts/cluster/up.sh's (start the cluster again: "
                "scripts/cluster/down.sh, then scripts/cluster/up.sh)")


def whole_objects(event: dict[str, Any]) -> str | None:
    """Why the list response of audit `event` is not metadata-only, or None when it is."""
    uri = event.get("requestURI", "?")
    body = event.get("responseObject")
    if body is None:
        return f"{uri}: {STALE_POLICY}"
    if (body.get("kind"), body.get("apiVersion")) != ("PartialObjectMetadataList", "meta.k8s.io/v1"):
        return (f"{uri} answered a {body.get('apiVersion')} {body.get('kind')}, "
                "not a PartialObjectMetadataList")
    for item in body.get("items") or []:
        extra = sorted(set(item) - METADATA_FIELDS)
        if item.get("kind") != "PartialObjectMetadata" or extra:
            meta = item.get("metadata", {})
            return (f"{uri}: item {meta.get('namespace')}/{meta.get('name')} is a {item.get('kind')} "
                    f"with {extra or 'no extra fields'}")
    return None


def _received(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()


def _lists(cluster: Cluster, user: str, since: float) -> list[dict[str, Any]]:
    """The list requests of `user` received since `since` (epoch seconds) of a child kind."""
    return [e for e in cluster.audit_events(user)
            if e.get("verb") == "list" and e.get("objectRef", {}).get("resource") in CHILD_RESOURCES
            and _received(e) >= since]


def _children(cluster: Cluster, ns: str, resource: str) -> set[str]:
    return {i["metadata"]["name"] for i in cluster.get(resource, namespace=ns, selector=MANAGED_BY)["items"]}


def _listed(events: list[dict[str, Any]], resource: str, ns: str) -> set[str]:
    """Names of the items of namespace `ns` in the lists of `resource` among `events`."""
    return {i["metadata"]["name"] for e in events if e["objectRef"]["resource"] == resource
            for i in (e.get("responseObject") or {}).get("items") or []
            if i.get("metadata", {}).get("namespace") == ns}


def _restart_operator(cluster: Cluster) -> float:
    """Restarts the host operator; returns the time just before it started."""
    op = cluster.host_operator("operator")
    op.stop()  # releases the Lease
    started = time.time()
    op.start()
    eventually("the restarted operator holds the Lease", lambda: cluster.lease_holder() == op.identity,
               timeout=60)
    eventually("the restarted operator's /readyz (leading, caches synced)", op.ready, timeout=90)
    return started


def _control(cluster: Cluster, ns: str) -> None:
    """A whole-object list and a metadata-only one of the stack's Deployments by a ServiceAccount
    of the operator's namespace: the audit log must show which is which."""
    import requests  # the venv has it; imported late so collection never needs it

    account = f"e2e-audit-probe-{secrets.token_hex(3)}"
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}"
    cluster.kubectl("-n", OPERATOR_NAMESPACE, "create", "serviceaccount", account)
    try:
        cluster.kubectl("-n", ns, "create", "rolebinding", account, "--clusterrole=view",
                        f"--serviceaccount={OPERATOR_NAMESPACE}:{account}")
        token = cluster.kubectl("-n", OPERATOR_NAMESPACE, "create", "token", account,
                                "--duration=10m").stdout.strip()
        server = cluster.kubectl("config", "view", "--minify", "-o",
                                 "jsonpath={.clusters[0].cluster.server}").stdout.strip()
        url = f"{server}/apis/apps/v1/namespaces/{ns}/deployments"
        answers = {}
        for form, accept in (("whole", "application/json"), ("metadata", METADATA_ACCEPT)):
            response = requests.get(url, params={"labelSelector": MANAGED_BY},
                                    headers={"Authorization": f"Bearer {token}", "Accept": accept},
                                    verify=str(cluster.state_dir / "pki" / "ca.crt"), timeout=30)
            assert response.status_code == 200, (
                f"{form} list as {user}: {response.status_code} {response.text[:300]}")
            body = response.json()
            assert len(body["items"]) >= 2, f"{form} list of ping and pong: {body}"
            answers[form] = body["kind"]
        assert answers == {"whole": "DeploymentList", "metadata": "PartialObjectMetadataList"}, answers

        def both_lists() -> list[dict[str, Any]] | None:
            found = [e for e in cluster.audit_events(user) if e.get("verb") == "list"]
            return found if len(found) >= 2 else None

        events = eventually(f"both lists of {user} in the audit log", both_lists, timeout=30)
        whole, metadata = sorted(events, key=_received)[:2]
        refused = whole_objects(whole)
        assert refused and "DeploymentList" in refused, (
            f"the check accepted a whole-object list (the test could never fail): {refused!r}, "
            f"{json.dumps(whole)[:1500]}")
        print(f"control, whole-object list refused: {refused}")
        # Its items alone are refused too (a whole-object list under the metadata list's name).
        relabelled = {**whole, "responseObject": {**whole["responseObject"],
                                                  "kind": "PartialObjectMetadataList",
                                                  "apiVersion": "meta.k8s.io/v1"}}
        refused = whole_objects(relabelled)
        assert refused and "spec" in refused, f"the check accepted whole items: {refused!r}"
        print(f"control, whole items refused: {refused}")
        assert whole_objects(metadata) is None, whole_objects(metadata)
    finally:
        cluster.kubectl("-n", OPERATOR_NAMESPACE, "delete", "serviceaccount", account,
                        "--ignore-not-found", check=False)


def test_the_child_watches_list_metadata_only(local: Cluster, ns: str) -> None:
    name = "meta"
    local.apply(stack_doc(name, {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
    local.wait_ready(ns, name)
    children = {r: _children(local, ns, r) for r in sorted(BUILT_IN)}
    assert children["deployments"] and children["statefulsets"], f"no workloads for {name}: {children}"
    served = local.kubectl("get", "crd", *OPTIONAL.values(), "--ignore-not-found",
                           "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    watched = BUILT_IN | {r for r, crd in OPTIONAL.items() if crd in served}

    user = operator_user(local)
    started = _restart_operator(local)

    def every_watched_kind_listed() -> list[dict[str, Any]] | None:
        events = _lists(local, user, started)
        listed = {e["objectRef"]["resource"] for e in events}
        return events if watched <= listed else None

    try:
        events = eventually("a list of every watched child kind by the restarted operator in the "
                            "audit log", every_watched_kind_listed, timeout=60)
    except AssertionError as error:
        listed = sorted({e["objectRef"]["resource"] for e in _lists(local, user, started)})
        raise AssertionError(f"{error}\nwatched: {sorted(watched)}; listed since the restart: "
                             f"{listed}; the operator's log:\n{local.operator_log(40)}") from None

    problems = [p for p in map(whole_objects, events) if p]
    assert not problems, "child lists that transferred whole objects:\n" + "\n".join(problems)
    # The lists carried this stack's children (as metadata).
    missing = {r: sorted(names - _listed(events, r, ns)) for r, names in children.items()
               if names - _listed(events, r, ns)}
    assert not missing, f"children of {name} absent from the operator's lists: {missing}"
    print(f"{len(events)} metadata-only lists of {sorted({e['objectRef']['resource'] for e in events})}, "
          f"with this stack's {({r: len(names) for r, names in children.items()})}")

    _control(local, ns)
    local.wait_ready(ns, name)
