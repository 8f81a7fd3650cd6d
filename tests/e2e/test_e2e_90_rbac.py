"""RBAC, checked after every other scenario ran: the operator's requests never got a 403 (the API
server's audit log), and `kubectl auth can-i --list` for its ServiceAccount shows exactly what the
chart grants (which tests/rbac.rs holds equal to operator/src/rbac.rs), with no wildcard."""

from __future__ import annotations

import re

import yaml

from e2e_helpers import CHART, OPERATOR_NAMESPACE, OPERATOR_RELEASE, Cluster

USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_RELEASE}"
# What every authenticated user may do (system:basic-user and friends).
DEFAULTS = {("selfsubjectaccessreviews.authorization.k8s.io", "create"),
            ("selfsubjectrulesreviews.authorization.k8s.io", "create"),
            ("selfsubjectreviews.authentication.k8s.io", "create")}
ADMISSION_403 = ("because it is being terminated",
                 "create not allowed while custom resource definition is terminating",
                 # OwnerReferencesPermissionEnforcement before the API server's REST mapper knows
                 # the CRD that was just installed (the sample stack's first reconcile on a fresh
                 # cluster); the operator's retry succeeds.
                 "cannot set blockOwnerDeletion in this case because cannot find RESTMapping")
ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def test_operator_never_got_a_403(local: Cluster) -> None:
    events = local.audit_events(USER)
    assert events, f"no audit events for {USER}: is the audit log on?"
    # Three 403s are admission's, whatever the RBAC: a write into a namespace being deleted
    # (NamespaceLifecycle: the suite deletes namespaces while stacks still live), a create of a
    # custom resource whose CRD is being deleted (test_e2e_51 removes the Gateway API's CRDs while
    # other stacks' routes are still applied), and an owner reference to a kind the API server's
    # REST mapper does not know yet (just after the CRD is installed).
    denied = sorted({f"{e['verb']} {e['requestURI']}: {e['responseStatus'].get('message', '')[:200]}"
                     for e in events if e.get("responseStatus", {}).get("code") == 403
                     and not any(admission in e["responseStatus"].get("message", "")
                                 for admission in ADMISSION_403)})
    assert not denied, f"the operator was denied: {denied}"


def _granted(cluster: Cluster, namespace: str) -> set[tuple[str, str]]:
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={USER}", "-n", namespace).stdout
    rows = set()
    for line in out.splitlines()[1:]:
        match = ROW.match(line)
        assert match, f"unparsed can-i row: {line!r}"
        resource, urls, names, verbs = match.groups()
        if not resource:
            continue  # non-resource URLs (discovery, /healthz...) every user may GET
        assert "*" not in resource and "*" not in verbs.split(), f"wildcard grant: {line}"
        assert not names, f"unexpected resourceNames grant: {line}"
        for verb in verbs.split():
            rows.add((resource, verb))
    return rows


def _chart_rules(cluster: Cluster, namespace: str) -> set[tuple[str, str]]:
    rendered = cluster.helm("template", OPERATOR_RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE).stdout
    rules = set()
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] not in ("ClusterRole", "Role"):
            continue
        if doc["kind"] == "Role" and doc["metadata"].get("namespace") != namespace:
            continue
        for rule in doc.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    base, _, sub = resource.partition("/")
                    name = f"{base}.{group}" if group else base
                    name += f"/{sub}" if sub else ""
                    for verb in rule["verbs"]:
                        rules.add((name, verb))
    return rules


def test_can_i_list_equals_the_declared_permissions(local: Cluster) -> None:
    for namespace in (OPERATOR_NAMESPACE, "default"):
        granted = _granted(local, namespace) - DEFAULTS
        declared = _chart_rules(local, namespace)
        assert granted == declared, (
            f"in {namespace}: granted but not declared {sorted(granted - declared)}; "
            f"declared but not granted {sorted(declared - granted)}")
