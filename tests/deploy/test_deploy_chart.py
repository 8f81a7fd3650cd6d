"""The Helm chart: strict lint, renders that pass the Kubernetes schemas, the operator Deployment's
contract (env, probes, restricted security), least-privilege RBAC, optional objects, and a
values schema that rejects bad values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from deploy_helpers import (
    CHART,
    ROOT,
    NAMESPACE,
    RELEASE,
    ci_values_files,
    find,
    render_chart,
    validate_object,
    workspace_version,
)

VALUES_FILES = [None, *ci_values_files()]


def _values(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _id(path: Path | None) -> str:
    return "defaults" if path is None else path.name


def _operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployments = find(objects, "Deployment")
    assert len(deployments) == 1, "the chart renders exactly one Deployment"
    return deployments[0]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _operator_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def _env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e for e in _container(objects)["env"]}


def test_ci_values_files_exist() -> None:
    names = {p.name for p in ci_values_files()}
    assert len(names) >= 3, f"expected several example values files in ci/, found {names}"


def test_chart_metadata_matches_workspace() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "pingpong-operator"
    assert meta["type"] == "application"
    assert meta["appVersion"] == workspace_version(), (
        "Chart.yaml appVersion must equal the workspace version in Cargo.toml"
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=_id)
def test_helm_lint_strict(values_file: Path | None) -> None:
    report = helm_python.lint(str(CHART), _values(values_file), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, (report["errors"], problems)


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=_id)
def test_render_passes_kubernetes_schemas(values_file: Path | None) -> None:
    objects = render_chart(_values(values_file))
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"} <= kinds
    for obj in objects:
        validate_object(obj)
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{obj['kind']} has no namespace"


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=_id)
def test_operator_pod_is_restricted(values_file: Path | None) -> None:
    """The Pod Security Standards "restricted" profile, plus a read-only root filesystem."""
    objects = render_chart(_values(values_file))
    pod = _operator_deployment(objects)["spec"]["template"]["spec"]
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] != 0
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert not sc.get("privileged")
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_operator_deployment_contract(default_objects: list[dict[str, Any]]) -> None:
    deployment = _operator_deployment(default_objects)
    container = _container(default_objects)
    assert container["image"] == "ghcr.io/pingpong-operator/operator:0.1.0"
    assert container["args"] == ["run"]
    env = _env(default_objects)
    assert set(env) == {
        "PINGPONG_PING_IMAGE", "PINGPONG_PONG_IMAGE", "PINGPONG_RABBITMQ_IMAGE",
        "WATCH_NAMESPACE", "METRICS_ADDR", "LOG_FORMAT", "RUST_LOG", "LEADER_ELECTION",
        "POD_NAME", "POD_NAMESPACE", "PINGPONG_ALLOWED_SECRETS",
        "PINGPONG_DEFAULT_GATEWAY", "PINGPONG_DEFAULT_GATEWAY_SECTION",
        "PINGPONG_MAX_CONCURRENT_UPGRADES",
    }
    assert env["PINGPONG_ALLOWED_SECRETS"]["value"] == ""
    assert env["PINGPONG_MAX_CONCURRENT_UPGRADES"]["value"] == "2"
    # No default Gateway unless the admin names one: stacks that choose no route get an Ingress.
    assert env["PINGPONG_DEFAULT_GATEWAY"]["value"] == ""
    assert env["PINGPONG_DEFAULT_GATEWAY_SECTION"]["value"] == ""
    assert env["PINGPONG_PING_IMAGE"]["value"] == "ghcr.io/pingpong-operator/ping:0.1.0"
    assert env["PINGPONG_PONG_IMAGE"]["value"] == "ghcr.io/pingpong-operator/pong:0.1.0"
    assert env["PINGPONG_RABBITMQ_IMAGE"]["value"] == "rabbitmq:4.2-management"
    assert env["WATCH_NAMESPACE"]["value"] == ""
    assert env["METRICS_ADDR"]["value"] == "0.0.0.0:8080"
    assert env["LOG_FORMAT"]["value"] == "json"
    assert env["LEADER_ELECTION"]["value"] == "true"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["serviceAccountName"] == find(default_objects, "ServiceAccount")[0][
        "metadata"]["name"]


def test_values_reach_the_container() -> None:
    objects = render_chart({
        "stackImages": {
            "ping": "r.example/p:1", "pong": "r.example/q:2", "rabbitmq": "rabbitmq:4.1",
        },
        "watchNamespace": "team-a",
        "allowedSecrets": ["team-a/db", "team-b/cache"],
        "defaultGateway": {"name": "public", "namespace": "gateway-system", "sectionName": "http"},
        "logging": {"format": "text", "level": "debug"},
        "metrics": {"port": 9000},
        "leaderElection": {"enabled": False},
        "image": {"tag": "9.9.9", "digest": "sha256:" + "a" * 64},
    })
    env = _env(objects)
    assert env["PINGPONG_PING_IMAGE"]["value"] == "r.example/p:1"
    assert env["PINGPONG_PONG_IMAGE"]["value"] == "r.example/q:2"
    assert env["PINGPONG_RABBITMQ_IMAGE"]["value"] == "rabbitmq:4.1"
    assert env["WATCH_NAMESPACE"]["value"] == "team-a"
    assert env["PINGPONG_ALLOWED_SECRETS"]["value"] == "team-a/db,team-b/cache"
    assert env["LOG_FORMAT"]["value"] == "text"
    assert env["RUST_LOG"]["value"] == "debug"
    assert env["METRICS_ADDR"]["value"] == "0.0.0.0:9000"
    assert env["LEADER_ELECTION"]["value"] == "false"
    assert env["PINGPONG_DEFAULT_GATEWAY"]["value"] == "gateway-system/public"
    assert env["PINGPONG_DEFAULT_GATEWAY_SECTION"]["value"] == "http"
    own = _env(render_chart({"defaultGateway": {"name": "public"}}))
    assert own["PINGPONG_DEFAULT_GATEWAY"]["value"] == "public"
    assert _container(objects)["image"] == (
        "ghcr.io/pingpong-operator/operator:9.9.9@sha256:" + "a" * 64
    )
    assert _operator_deployment(objects)["spec"]["strategy"]["type"] == "Recreate"
    service = find(objects, "Service")[0]
    assert service["spec"]["ports"][0]["port"] == 9000


def test_two_replicas_with_leader_election_get_a_pdb() -> None:
    objects = render_chart({"replicaCount": 2})
    assert _operator_deployment(objects)["spec"]["replicas"] == 2
    pdb = find(objects, "PodDisruptionBudget")
    assert len(pdb) == 1 and pdb[0]["spec"]["maxUnavailable"] == 1
    assert not find(render_chart(None), "PodDisruptionBudget")


# --- RBAC -----------------------------------------------------------------------------------

# Exactly operator/src/rbac.rs PERMISSIONS (the code's truth; operator/tests/operator/rbac.rs compares
# it with install.yaml): list/watch for the watches, create+patch for server-side apply (a real API
# server authorizes the apply of a missing object as create), get where the
# code reads an object, delete for the children the spec can drop, Events, a Lease for leader
# election (in a Role of the release namespace) and a read of CRDs.
# get on every applied kind: before a child's first apply, whether an object of its name exists that
# the stack does not control (it is then never modified).
WATCH_APPLY = {"list", "watch", "create", "patch", "get"}
EXPECTED_STACK_RULES = {
    ("pingpong.dev", "pingpongstacks"): {"list", "watch"},
    ("pingpong.dev", "pingpongstacks/status"): {"patch"},
    # blockOwnerDeletion under the OwnerReferencesPermissionEnforcement admission plugin
    ("pingpong.dev", "pingpongstacks/finalizers"): {"update"},
    ("", "configmaps"): WATCH_APPLY,
    # Secrets: never listed nor watched; generated ones created (never applied), others read by
    # name; patch: the server-side apply of <stack>-rabbitmq-definitions, rendered from the
    # credentials Secret.
    ("", "secrets"): {"create", "get", "patch"},
    # delete on services, deployments, statefulsets, networkpolicies: pong's provisioned
    # PostgreSQL and Redis when the store or cache is switched off.
    ("", "services"): WATCH_APPLY | {"delete"},
    ("apps", "deployments"): WATCH_APPLY | {"delete"},
    ("apps", "statefulsets"): WATCH_APPLY | {"delete"},
    ("networking.k8s.io", "ingresses"): WATCH_APPLY | {"delete"},
    ("networking.k8s.io", "networkpolicies"): WATCH_APPLY | {"delete"},
    ("policy", "poddisruptionbudgets"): WATCH_APPLY | {"delete"},
    ("gateway.networking.k8s.io", "httproutes"): WATCH_APPLY | {"delete"},
    ("monitoring.coreos.com", "servicemonitors"): WATCH_APPLY | {"delete"},
    ("monitoring.coreos.com", "prometheusrules"): WATCH_APPLY | {"delete"},
    # autoscaling.engine: keda; deleted when the stack goes back to the operator's own loop
    ("keda.sh", "scaledobjects"): WATCH_APPLY | {"delete"},
    ("keda.sh", "triggerauthentications"): WATCH_APPLY | {"delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
    # the autoscaler reports an HPA that targets an autoscaled pong Deployment
    ("autoscaling", "horizontalpodautoscalers"): {"list"},
    # the pods of a workload that is not ready, so status names the one that fails and why
    # and, before an autoscaler scale-in step, pong's pods get their pod-deletion-cost annotation
    ("", "pods"): {"delete", "list", "patch"},
    # the selector migration relabels a Deployment's ReplicaSets before re-creating it
    ("apps", "replicasets"): {"list", "patch"},
}
EXPECTED_CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get"},
}
EXPECTED_LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


def _rbac_rs_permissions() -> dict[tuple[str, str], set[str]]:
    """PERMISSIONS from operator/src/rbac.rs, parsed from the source (const verb lists included)."""
    source = (CHART.parents[1] / "operator" / "src" / "rbac.rs").read_text(encoding="utf-8")
    consts = {
        name: set(re.findall(r'"([a-z]+)"', body))
        for name, body in re.findall(r"const (\w+): &\[&str\] = &\[([^\]]*)\];", source)
    }
    table: dict[tuple[str, str], set[str]] = {}
    for group, resource, verbs in re.findall(
        r'api_group: "([^"]*)",\s*resource: "([^"]+)",\s*verbs: (&\[[^\]]*\]|\w+),', source
    ):
        table[(group, resource)] = consts[verbs] if verbs in consts else set(
            re.findall(r'"([a-z]+)"', verbs))
    return table


def test_expected_rbac_is_the_operators_permission_table() -> None:
    parsed = _rbac_rs_permissions()
    assert parsed, "no Permission rows found in operator/src/rbac.rs"
    assert parsed == {**EXPECTED_STACK_RULES, **EXPECTED_CLUSTER_RULES, **EXPECTED_LEASE_RULES}


def _permissions(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames"), "rules are per resource type"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


def _binding_targets(objects: list[dict[str, Any]], sa_name: str) -> None:
    for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}
        ]
        kind = binding["roleRef"]["kind"]
        targets = find(objects, kind, binding["roleRef"]["name"])
        if kind == "Role":
            targets = [t for t in targets
                       if t["metadata"]["namespace"] == binding["metadata"]["namespace"]]
        assert len(targets) == 1, f"{binding['metadata']['name']} binds a missing {kind}"


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=_id)
def test_rbac_has_no_wildcards(values_file: Path | None) -> None:
    objects = render_chart(_values(values_file))
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"wildcard in {role['metadata']['name']}"
            assert not rule.get("nonResourceURLs")
    _binding_targets(objects, find(objects, "ServiceAccount")[0]["metadata"]["name"])


def test_rbac_cluster_wide_is_exactly_what_the_operator_uses(
    default_objects: list[dict[str, Any]],
) -> None:
    (cluster_role,) = find(default_objects, "ClusterRole")
    assert _permissions(cluster_role) == {**EXPECTED_STACK_RULES, **EXPECTED_CLUSTER_RULES}
    (lease_role,) = find(default_objects, "Role")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert _permissions(lease_role) == EXPECTED_LEASE_RULES


def test_readme_permission_table_is_the_cluster_role(
    default_objects: list[dict[str, Any]],
) -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    table: dict[tuple[str, str], set[str]] = {}
    for group, resources, verbs in re.findall(
        r"^\| `([^`]*)` \| ([a-z/, `]+) \| ([a-z, ]+) \|", readme, re.MULTILINE
    ):
        for resource in resources.replace("`", "").split(", "):
            table[("" if group == '""' else group, resource)] = set(verbs.split(", "))
    (cluster_role,) = find(default_objects, "ClusterRole")
    assert table == _permissions(cluster_role), "charts/pingpong-operator/README.md is stale"


def test_rbac_single_namespace_uses_a_role() -> None:
    objects = render_chart({"watchNamespace": "team-a"})
    (cluster_role,) = find(objects, "ClusterRole")
    assert _permissions(cluster_role) == EXPECTED_CLUSTER_RULES
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in find(objects, "Role")}
    assert _permissions(roles[("team-a", RELEASE)]) == EXPECTED_STACK_RULES
    assert _permissions(roles[(NAMESPACE, f"{RELEASE}-leader-election")]) == EXPECTED_LEASE_RULES
    no_election = render_chart({"watchNamespace": "team-a", "leaderElection": {"enabled": False}})
    assert [r["metadata"]["namespace"] for r in find(no_election, "Role")] == ["team-a"]


def test_rbac_and_service_account_can_be_turned_off() -> None:
    objects = render_chart({"rbac": {"create": False},
                            "serviceAccount": {"create": False, "name": "existing"}})
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                        "ServiceAccount"}
    pod = _operator_deployment(objects)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing"


# --- optional objects -----------------------------------------------------------------------

def test_optional_objects_are_off_by_default(default_objects: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in default_objects}
    assert not kinds & {"ServiceMonitor", "ConfigMap", "PodDisruptionBudget"}
    assert find(default_objects, "Service", f"{RELEASE}-metrics")


def test_network_policy_is_on_by_default(default_objects: list[dict[str, Any]]) -> None:
    """Every pod gets a NetworkPolicy (issue 12): the operator's admits only its metrics port."""
    (policy,) = find(default_objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert not find(render_chart({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objects = render_chart({"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    (monitor,) = find(objects, "ServiceMonitor")
    (service,) = find(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in port_names
    with pytest.raises(helm_python.HelmError):
        render_chart({"serviceMonitor": {"enabled": True}, "metrics": {"service": {
            "enabled": False, "type": "ClusterIP"}}})


def test_network_policy_admits_only_the_metrics_port() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}]
    objects = render_chart({"networkPolicy": {"enabled": True, "metricsFrom": peers}})
    (policy,) = find(objects, "NetworkPolicy")
    deployment = _operator_deployment(objects)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= deployment["spec"][
        "template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == peers


# --- Grafana dashboard ------------------------------------------------------------------------

DASHBOARD_METRICS = {
    "pingpong_operator_reconciliations_total", "pingpong_operator_reconcile_duration_seconds",
    "pingpong_operator_reconcile_errors_total", "pingpong_operator_stacks_managed",
    "pingpong_operator_stacks_ready",
    "pingpong_ping_http_requests_total", "pingpong_ping_http_request_duration_seconds",
    "pingpong_ping_messages_published_total", "pingpong_ping_publish_failures_total",
    "pingpong_ping_publish_confirm_duration_seconds", "pingpong_ping_broker_connected",
    "pingpong_pong_messages_consumed_total", "pingpong_pong_stored_messages",
    "pingpong_pong_messages_evicted_total", "pingpong_pong_messages_duplicate_total",
    "pingpong_pong_messages_dead_lettered_total", "pingpong_pong_end_to_end_latency_seconds",
    "pingpong_pong_broker_connected",
    "pingpong_operator_autoscaler_backlog_messages", "pingpong_operator_autoscaler_desired_replicas",
    "pingpong_operator_autoscaler_scale_events_total",
}

# The checked-in metric lists of each process (also read by the crates' own metrics tests).
METRIC_LISTS = [
    ROOT / "operator" / "metrics.txt",
    ROOT / "services" / "ping" / "metrics.txt",
    ROOT / "services" / "pong" / "metrics.txt",
]


def _exported_metric_names() -> set[str]:
    names: set[str] = set()
    for path in METRIC_LISTS:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.add(line)
    return names


def _dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\b(pingpong_[a-z_]+|rabbitmq_[a-z_]+)", target["expr"]):
                names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def test_grafana_dashboard_configmap() -> None:
    objects = render_chart({"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    (configmap,) = find(objects, "ConfigMap")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (payload,) = configmap["data"].values()
    dashboard = json.loads(payload)
    assert dashboard == json.loads((CHART / "dashboards" / "pingpong-operator.json").read_text())
    names = _dashboard_metric_names(dashboard)
    assert DASHBOARD_METRICS <= names, f"panels missing for {DASHBOARD_METRICS - names}"
    exported = _exported_metric_names()
    assert DASHBOARD_METRICS <= exported, f"not exported: {DASHBOARD_METRICS - exported}"
    queried = {n for n in names if n.startswith("pingpong_")}
    assert queried <= exported, f"dashboard queries metrics no process exports: {queried - exported}"
    assert any(n.startswith("rabbitmq_") for n in names), "no broker panels"
    titles = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert titles == ["Operator", "ping service", "pong service", "RabbitMQ broker"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    # Trace links (issue 17): the latency panels open the trace search of their service for the
    # panel's time range (Jaeger takes microseconds; Grafana's ${__from} is milliseconds).
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["traces_url"]["type"] == "textbox"
    assert dashboard["links"][0]["url"] == "${traces_url}/search"
    traced = {p["title"]: p["fieldConfig"]["defaults"]["links"][0]["url"] for p in dashboard["panels"]
              if p.get("fieldConfig", {}).get("defaults", {}).get("links")}
    window = "&start=${__from}000&end=${__to}000&limit=20"
    assert traced == {
        "Reconcile duration": "${traces_url}/search?service=pingpong-operator" + window,
        "HTTP request duration": "${traces_url}/search?service=ping" + window,
        "Publisher confirm latency": "${traces_url}/search?service=ping" + window,
        "End-to-end latency (publish to stored)": "${traces_url}/search?service=pong" + window,
    }, traced
    taken: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = taken.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap at x={x} y={y}"


# --- values and their schema ------------------------------------------------------------------

def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_commented_and_documented() -> None:
    """values.yaml is fully commented: every key of the first two levels has a comment line
    right above it, and every top-level key appears in the chart README's values table."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    keys = 0
    for index, line in enumerate(lines):
        match = re.match(r"^( {0,2})(\w+):", line)
        if not match:
            continue
        keys += 1
        key = match.group(2)
        previous = lines[index - 1].strip() if index else ""
        assert previous.startswith("#"), f"values.yaml key {key} has no comment above it"
        if not match.group(1):
            assert f"`{key}" in readme, f"{key} missing from the README values table"
    assert keys > 20


def test_values_schema_is_draft7_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(defaults) <= set(schema["properties"])
    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(defaults)
        for path in ci_values_files():
            chart.validate_schema(chart.merge_values(_values(path)))


BAD_VALUES = {
    "unknown-key": {"replicas": 2},
    "negative-replicas": {"replicaCount": -1},
    "replicas-not-a-number": {"replicaCount": "two"},
    "ha-without-leader-election": {"replicaCount": 2, "leaderElection": {"enabled": False}},
    "unknown-log-format": {"logging": {"format": "xml"}},
    "privileged-metrics-port": {"metrics": {"port": 80}},
    "bad-pull-policy": {"image": {"pullPolicy": "Sometimes"}},
    "tag-with-space": {"image": {"tag": "bad tag"}},
    "bad-digest": {"image": {"digest": "md5:abc"}},
    "empty-ping-image": {"stackImages": {"ping": ""}},
    "uppercase-rabbitmq-image": {"stackImages": {"rabbitmq": "RabbitMQ:Latest"}},
    "bad-watch-namespace": {"watchNamespace": "Team_A"},
    "service-monitor-not-bool": {"serviceMonitor": {"enabled": "yes"}},
    "bad-scrape-interval": {"serviceMonitor": {"interval": "30 seconds"}},
    "bad-memory-quantity": {"resources": {"limits": {"memory": "lots"}}},
    "non-string-annotation": {"podAnnotations": {"team": 1}},
    "empty-network-peer": {"networkPolicy": {"enabled": True, "metricsFrom": [{}]}},
    "unknown-nested-key": {"leaderElection": {"enabled": True, "leaseDuration": "15s"}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmError):
        render_chart(values)
    report = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"]), (
        "helm lint accepted bad values"
    )


def test_template_rejects_inconsistent_values() -> None:
    """Checks the schema cannot express are enforced by the templates at render time."""
    with pytest.raises(helm_python.HelmError, match="serviceAccount.name"):
        render_chart({"serviceAccount": {"create": False}})
