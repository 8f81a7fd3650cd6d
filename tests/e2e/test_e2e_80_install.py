"""Install paths with the real tools: `helm upgrade` with changed values, `helm uninstall` (the CRD
stays, by Helm's rule for crds/, and everything else goes), `kubectl apply -f manifests/install.yaml`
reconciling a stack under that file's RBAC, then `helm install` again. Local mode only: the
operator runs on the host with a token of the ServiceAccount each install creates."""

from __future__ import annotations

from e2e_helpers import CHART, OPERATOR_NAMESPACE, OPERATOR_RELEASE, ROOT, Cluster, eventually, stack_doc

CRD = "pingpongstacks.pingpong.dev"


def _operator_env(cluster: Cluster) -> dict[str, str]:
    deploy = cluster.get("deployment", OPERATOR_RELEASE, OPERATOR_NAMESPACE)
    env = deploy["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return {e["name"]: e.get("value", "") for e in env}


def _restart_operator(cluster: Cluster) -> None:
    op = cluster.host_operator("operator")
    op.stop()
    cluster.operator_script("new-token")
    op.start()
    eventually("the operator is ready", lambda: op.metrics(), timeout=90)


def test_helm_upgrade_uninstall_kubectl_apply_and_reinstall(local: Cluster, ns: str) -> None:
    cluster = local
    cluster.helm("upgrade", OPERATOR_RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE,
                 "--reuse-values", "--set", "logging.level=debug")
    assert _operator_env(cluster)["RUST_LOG"] == "debug"
    assert cluster.get("deployment", OPERATOR_RELEASE, OPERATOR_NAMESPACE)["metadata"]["labels"][
        "helm.sh/chart"].startswith("pingpong-operator-")

    cluster.host_operator("operator").stop()  # its token dies with the ServiceAccount
    cluster.helm("uninstall", OPERATOR_RELEASE, "-n", OPERATOR_NAMESPACE, "--wait")
    assert cluster.exists("crd", CRD), "helm uninstall removed the CRD"
    for kind, name, namespace in (("serviceaccount", OPERATOR_RELEASE, OPERATOR_NAMESPACE),
                                  ("deployment", OPERATOR_RELEASE, OPERATOR_NAMESPACE),
                                  ("clusterrole", OPERATOR_RELEASE, None),
                                  ("clusterrolebinding", OPERATOR_RELEASE, None)):
        eventually(f"{kind} {name} removed", lambda: not cluster.exists(kind, name, namespace))

    cluster.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"),
                    "-f", str(ROOT / "manifests" / "install.yaml"))
    assert cluster.exists("clusterrole", OPERATOR_RELEASE)
    _restart_operator(cluster)
    cluster.apply(stack_doc("plain", {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
    cluster.wait_ready(ns, "plain")

    cluster.host_operator("operator").stop()
    cluster.kubectl("delete", "-f", str(ROOT / "manifests" / "install.yaml"), "--wait=true",
                    "--timeout=120s")
    eventually("namespace pingpong-system gone",
               lambda: not cluster.exists("namespace", OPERATOR_NAMESPACE), timeout=120)
    cluster.helm("install", OPERATOR_RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE,
                 "--create-namespace")
    _restart_operator(cluster)
    cluster.kubectl("annotate", "pps", "-n", ns, "plain", "reinstalled=1")
    cluster.wait_ready(ns, "plain")
