"""Broker credentials rotation on the real API server, under the chart's RBAC: the operator
renders `<stack>-rabbitmq-definitions` from the credentials Secret (server-side apply, the one
Secret it patches), follows a changed password and a renamed user, rolls the broker, ping and pong
(their pod templates follow a digest, never a value), and never writes the user's Secret. The
broker's own import of the file is proved with the real rabbitmq-server in
tests/system/test_system_broker_definitions.py."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from e2e_helpers import OPERATOR_NAMESPACE, OPERATOR_RELEASE, Cluster, eventually, stack_doc

USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_RELEASE}"


def _secret(name: str, username: str, password: str) -> dict[str, Any]:
    # pingpong.dev/referable: the opt-in that lets a stack name this Secret.
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": {"pingpong.dev/referable": "true"}},
            "stringData": {"username": username, "password": password}}


def _definitions(cluster: Cluster, ns: str, stack: str) -> dict[str, Any] | None:
    if not cluster.exists("secret", f"{stack}-rabbitmq-definitions", ns):
        return None
    secret = cluster.get("secret", f"{stack}-rabbitmq-definitions", ns)
    return json.loads(base64.b64decode(secret["data"]["definitions.json"]))


def _hashes(cluster: Cluster, ns: str, stack: str) -> dict[str, str]:
    """What rolls each workload: its pod template's Secret digest (the credentials' content)."""
    out = {}
    for kind, name in [("statefulset", f"{stack}-rabbitmq"), ("deployment", f"{stack}-ping"),
                       ("deployment", f"{stack}-pong")]:
        obj = cluster.get(kind, name, ns)
        out[name] = obj["spec"]["template"]["metadata"]["annotations"]["pingpong.dev/secret-digest"]
    return out


def _poke(cluster: Cluster, ns: str, stack: str) -> None:
    """The operator does not watch the user's Secret: an annotation triggers the reconcile now."""
    cluster.kubectl("-n", ns, "annotate", "pingpongstack", stack, f"reconcile={time.time_ns()}",
                    "--overwrite")


def test_a_changed_credentials_secret_is_rendered_into_the_broker_definitions(
        cluster: Cluster, ns: str) -> None:
    name = "rotate"
    cluster.apply(_secret("rotate-broker", "app-user", "first-password-1"), ns)
    cluster.apply(stack_doc(name, {"rabbitmq": {"credentialsSecret": "rotate-broker"}}), ns)
    cluster.wait_ready(ns, name)
    first = eventually("the definitions Secret", lambda: _definitions(cluster, ns, name))
    assert first["users"] == [{"name": "app-user", "password": "first-password-1",
                               "tags": ["administrator"]}]
    assert first["vhosts"] == [{"name": "/"}]
    definitions = cluster.get("secret", f"{name}-rabbitmq-definitions", ns)
    assert definitions["metadata"]["ownerReferences"][0]["kind"] == "PingPongStack"
    before = _hashes(cluster, ns, name)
    user_secret_rv = cluster.get("secret", "rotate-broker", ns)["metadata"]["resourceVersion"]

    # The password changes in the Secret only.
    cluster.apply(_secret("rotate-broker", "app-user", "second-password-2"), ns)
    _poke(cluster, ns, name)
    rotated = eventually("the new password in the definitions",
                         lambda: (d := _definitions(cluster, ns, name))
                         and d["users"][0].get("password") == "second-password-2" and d)
    assert rotated["users"] == [{"name": "app-user", "password": "second-password-2",
                                 "tags": ["administrator"]}]
    after = eventually("every pod template to roll",
                       lambda: (h := _hashes(cluster, ns, name))
                       and all(h[k] != before[k] for k in before) and h)
    for kind, obj_name in [("statefulset", f"{name}-rabbitmq"), ("deployment", f"{name}-ping"),
                           ("deployment", f"{name}-pong")]:
        text = json.dumps(cluster.get(kind, obj_name, ns))
        assert "second-password-2" not in text and "first-password-1" not in text, obj_name
    assert set(after) == set(before)

    # A renamed user: the old one stays declared without a password (its import clears it).
    cluster.apply(_secret("rotate-broker", "new-user", "third-password-3"), ns)
    _poke(cluster, ns, name)
    renamed = eventually("the renamed user in the definitions",
                         lambda: (d := _definitions(cluster, ns, name))
                         and d["users"][0]["name"] == "new-user" and d)
    assert renamed["users"] == [
        {"name": "new-user", "password": "third-password-3", "tags": ["administrator"]},
        {"name": "app-user", "tags": []},
    ]
    cluster.wait_ready(ns, name)

    # The operator patched only the definitions Secret, and never wrote the user's Secret.
    user_secret = cluster.get("secret", "rotate-broker", ns, managed_fields=True)
    assert user_secret["metadata"]["resourceVersion"] != user_secret_rv  # our own applies
    managers = {m["manager"] for m in user_secret["metadata"]["managedFields"]}
    assert managers, "the test's own writes are listed"
    assert not any("pingpong" in m for m in managers), managers
    if cluster.local:
        writes = {(e["verb"], e["objectRef"].get("name"))
                  for e in cluster.audit_events(USER)
                  if e.get("objectRef", {}).get("resource") == "secrets"
                  and e.get("objectRef", {}).get("namespace") == ns
                  and e["verb"] in ("create", "patch", "update", "delete")}
        assert writes, "no Secret write by the operator in the audit log"
        assert {n for _, n in writes} == {f"{name}-rabbitmq-definitions",
                                         f"{name}-rabbitmq-erlang-cookie"}, writes
        assert {n for v, n in writes if v == "patch"} == {f"{name}-rabbitmq-definitions"}, writes
        denied = [e["requestURI"] for e in cluster.audit_events(USER)
                  if e.get("responseStatus", {}).get("code") == 403
                  and e.get("objectRef", {}).get("namespace") == ns]
        assert not denied, denied
