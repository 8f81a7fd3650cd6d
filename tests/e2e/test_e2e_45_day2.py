"""Day-2 changes the API server itself decides: fields that map to a StatefulSet's immutable
volumeClaimTemplates, broker scale-down and fewer partitions are refused at admission with the CEL
rule's message;
a child the API refuses (here a ValidatingAdmissionPolicy standing in for ingress-nginx's webhook)
is named in the stack's status while every other child is still applied, and the stack recovers
once the child is accepted."""

from __future__ import annotations

import yaml

from e2e_helpers import Cluster, eventually, stack_doc


def _refused(cluster: Cluster, ns: str, name: str, spec: dict, message: str) -> None:
    result = cluster.apply(stack_doc(name, spec), ns, check=False)
    assert result.returncode != 0, f"the change was accepted: {spec}"
    assert message in result.stderr, result.stderr


def test_broker_storage_and_scale_down_are_refused(cluster: Cluster, ns: str) -> None:
    name = "immutable"
    spec = {"rabbitmq": {"replicas": 3, "storage": {"size": "1Gi"}}}
    cluster.apply(stack_doc(name, spec), ns)
    cluster.wait_ready(ns, name)
    _refused(cluster, ns, name, {"rabbitmq": {"replicas": 3, "storage": {"size": "2Gi"}}},
             "rabbitmq.storage cannot be changed after creation")
    _refused(cluster, ns, name, {"rabbitmq": {"replicas": 1, "storage": {"size": "1Gi"}}},
             "rabbitmq.replicas cannot be decreased")
    cluster.apply(stack_doc(name, {"rabbitmq": {"replicas": 5, "storage": {"size": "1Gi"}}}), ns)
    eventually("five brokers", lambda: cluster.stack(ns, name)["status"]["rabbitmq"]["replicas"] == 5)
    cluster.wait_ready(ns, name)


def _env(cluster: Cluster, ns: str, deployment: str) -> dict[str, str]:
    spec = cluster.get("deployment", deployment, ns)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_partitions_grow_and_never_shrink(cluster: Cluster, ns: str) -> None:
    """Issue 20: `rabbitmq.partitions` reaches ping and pong as RABBITMQ_PARTITIONS (only above
    1, so a stack of one partition renders what it did before partitions existed), grows, and
    never shrinks, whether set or left to its default."""
    one = "one-partition"
    cluster.apply(stack_doc(one, {}), ns)
    cluster.wait_ready(ns, one)
    for component in ("ping", "pong"):
        assert "RABBITMQ_PARTITIONS" not in _env(cluster, ns, f"{one}-{component}")

    name = "partitioned"
    cluster.apply(stack_doc(name, {"rabbitmq": {"partitions": 4}}), ns)
    cluster.wait_ready(ns, name)
    for component in ("ping", "pong"):
        assert _env(cluster, ns, f"{name}-{component}")["RABBITMQ_PARTITIONS"] == "4"
    message = "rabbitmq.partitions (default 1) cannot be decreased"
    _refused(cluster, ns, name, {"rabbitmq": {"partitions": 2}}, message)
    _refused(cluster, ns, name, {}, message)
    cluster.apply(stack_doc(name, {"rabbitmq": {"partitions": 6}}), ns)
    eventually("ping and pong spread over six partitions", lambda: all(
        _env(cluster, ns, f"{name}-{component}").get("RABBITMQ_PARTITIONS") == "6"
        for component in ("ping", "pong")))
    cluster.wait_ready(ns, name)


def test_postgres_storage_is_refused(cluster: Cluster, ns: str) -> None:
    name = "pgimmutable"
    store = {"type": "postgres", "postgres": {"provisioned": {"storage": {"size": "1Gi"}}}}
    cluster.apply(stack_doc(name, {"pong": {"store": store}}), ns)
    cluster.wait_ready(ns, name)
    bigger = {"type": "postgres", "postgres": {"provisioned": {"storage": {"size": "5Gi"}}}}
    _refused(cluster, ns, name, {"pong": {"store": bigger}},
             "pong.store.postgres.provisioned.storage cannot be changed after creation")


def _deny_ingresses(ns: str) -> str:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": f"{ns}-no-ingress"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                     "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"]}]},
                 "validations": [{"expression": "false",
                                  "message": "admission webhook denied the request: ingress rejected"}]},
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": f"{ns}-no-ingress"},
        "spec": {"policyName": f"{ns}-no-ingress", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {
                     "matchLabels": {"kubernetes.io/metadata.name": ns}}}},
    }
    return yaml.safe_dump_all([policy, binding])


def _ingress_denied(cluster: Cluster, ns: str) -> bool:
    probe = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "probe"},
             "spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}
    return cluster.kubectl("create", "--dry-run=server", "-n", ns, "-f", "-",
                           input=yaml.safe_dump(probe), check=False).returncode != 0


def test_a_refused_child_does_not_stop_the_others(cluster: Cluster, ns: str) -> None:
    name = "refused"
    cluster.kubectl("apply", "-f", "-", input=_deny_ingresses(ns))
    try:
        # The policy takes effect once the API server has loaded it.
        eventually("the ValidatingAdmissionPolicy denies Ingresses", lambda: _ingress_denied(cluster, ns))
        cluster.apply(stack_doc(name, {"rabbitmq": {"storage": {"ephemeral": True}},
                                       "ingress": {"enabled": True}}), ns)
        cond = cluster.wait_condition(ns, name, "Degraded", "True", timeout=90)
        assert f"Ingress {name}" in cond["message"], cond
        assert "ingress rejected" in cond["message"], cond
        for kind, child in (("statefulset", f"{name}-rabbitmq"), ("deployment", f"{name}-ping"),
                            ("deployment", f"{name}-pong"), ("service", f"{name}-pong"),
                            ("networkpolicy", f"{name}-rabbitmq")):
            assert cluster.exists(kind, child, ns), f"{kind} {child} was not applied"
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=_deny_ingresses(ns), check=False)
    eventually("Ingresses admitted again", lambda: not _ingress_denied(cluster, ns))
    # The retry follows the backoff of its category (README, Retries); a change of the stack
    # reconciles at once.
    cluster.kubectl("annotate", "pps", "-n", ns, name, "pingpong.dev/retry=now")
    cluster.wait_ready(ns, name, timeout=120)
    assert cluster.exists("ingress", name, ns)
