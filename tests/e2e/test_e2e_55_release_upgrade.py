"""An upgrade from the previous release to this working tree, with the real helm and both
operators' binaries, on a real API server.

"Previous release" (scripts/previous-release.sh, which builds its operator once and caches it
outside git by commit): the newest `v*` tag reachable from HEAD once one exists; until then the
repository as it was before the newest commit on HEAD's first-parent line that changed charts/
(that commit's first parent; HEAD itself when charts/ has uncommitted changes). The chart's
version is not bumped per change, so it cannot name a release. Git history is needed: under
CI=true a shallow clone or a missing commit fails this test with the script's message.

The scenario, as a user upgrades:
1. The shared operator (the suite's, of this working tree) is stopped. The previous release is
   installed as a release of its own in a namespace of its own: its CRD put in place (`kubectl
   replace`: helm skips crds/ when the CRD exists, as it does here), `helm install` of its chart, and its operator binary run
   on the host as that release's ServiceAccount, with the environment the chart's Deployment gives
   it (what its pod would get).
2. Three stacks (ephemeral broker storage): `manual` (no policy: Manual), `auto`
   (`upgradePolicy: Automatic`), `chosen` (Automatic, with `rabbitmq.image` in the spec). Once
   Ready, their pod uids, workload pod templates and `status.images` are recorded.
3. The upgrade: the previous operator stops, the working tree's CRD is applied as the README says
   (`kubectl apply --server-side --force-conflicts -f manifests/crd.yaml`), `helm upgrade` to the working tree's
   chart with a new default broker image (`--set stackImages.rabbitmq=...`, as a release with a
   new RabbitMQ ships, so that something is always available whatever the two commits' defaults),
   and the working tree's operator runs with the upgraded Deployment's environment.
4. Checked on converged state: `manual`'s pods, pod templates and workload selectors are the
   ones recorded (no uid, template or selector changed), its `status.images` keeps the images it
   ran and shows every newer default as `available`, and `UpgradeAvailable` is True
   (`NewerDefaultImage`; from a release before the unique selectors its message also names the
   workloads that keep the earlier selector); `auto` runs the new broker default, records it, is
   Ready with nothing available (after its change of broker series waited for the running
   broker's answer, which kwok's pods never give, and the user let it through with the annotation
   `pingpong.dev/rabbitmq-upgrade`); `auto` and `chosen` select by `pingpong.dev/stack` (migrated from
   an earlier release's selector: their broker restarts, as their policy allows); `chosen` keeps
   the broker image its spec names. Every stack is Ready.
Afterwards (also on failure) the release and its namespace are removed, the working tree's CRD is
applied and the shared operator started again. Local mode only: the operators run on the host."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from e2e_helpers import (CHART, ROOT, Cluster, HostOperator, eventually, missing, stack_doc,
                         unique)

NEW_BROKER_DEFAULT = "rabbitmq:4.3-management"
CHILD_WORKLOADS = (("statefulset", "rabbitmq"), ("deployment", "ping"), ("deployment", "pong"))
# The selector label of releases since the unique selectors (README, Day-2 "Selectors").
UNIQUE_SELECTOR = "pingpong.dev/stack"


def _previous_release() -> Path:
    result = subprocess.run([str(ROOT / "scripts" / "previous-release.sh")], cwd=ROOT,
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        missing("scripts/previous-release.sh could not provide the previous release:\n"
                f"{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> None:
    """A kubeconfig for the API server with a TokenRequest token of `namespace/account`."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    token = cluster.kubectl("-n", namespace, "create", "token", account, "--duration=2h").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "release", "context": {"cluster": admin["clusters"][0]["name"],
                                                     "user": account, "namespace": namespace}}],
        "current-context": "release"}))
    path.chmod(0o600)


def _deployment_env(cluster: Cluster, namespace: str, release: str) -> dict[str, str]:
    """The operator Deployment's literal environment, as the chart renders it (what its pod gets;
    scripts/cluster/operator.sh sets the metrics address, log settings, POD_* and KUBECONFIG)."""
    deploy = cluster.get("deployment", release, namespace)
    env = deploy["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return {e["name"]: e["value"] for e in env if "value" in e}


def _start(cluster: Cluster, op: HostOperator, kubeconfig: Path, namespace: str,
           env: dict[str, str]) -> None:
    cluster.operator_script("start", op.name, str(op.port),
                            env={**env, "OPERATOR_KUBECONFIG": str(kubeconfig),
                                 "OPERATOR_NAMESPACE": namespace})
    eventually(f"the operator {op.name} is ready", op.ready, timeout=120)


def _workload_templates(cluster: Cluster, ns: str, stack: str) -> dict[str, Any]:
    return {f"{kind}/{stack}-{role}": cluster.get(kind, f"{stack}-{role}", ns)["spec"]["template"]
            for kind, role in CHILD_WORKLOADS}


def _pods(cluster: Cluster, ns: str, stack: str) -> dict[str, str]:
    """Pod name → uid of every pod of `stack`."""
    items = cluster.get("pods", namespace=ns, selector=f"app.kubernetes.io/instance={stack}")["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in items}


def _selectors(cluster: Cluster, ns: str, stack: str) -> dict[str, Any]:
    return {f"{kind}/{stack}-{role}": cluster.get(kind, f"{stack}-{role}", ns)["spec"]["selector"]
            for kind, role in CHILD_WORKLOADS}


def _unique_selectors(selectors: dict[str, Any]) -> bool:
    """Every workload selects by the operator's own `pingpong.dev/stack` (not an earlier
    release's `app.kubernetes.io/instance` + `component`)."""
    return all(UNIQUE_SELECTOR in (s.get("matchLabels") or {}) for s in selectors.values())


def _images(cluster: Cluster, ns: str, stack: str) -> dict[str, Any]:
    return (cluster.stack(ns, stack).get("status") or {}).get("images") or {}


def _broker_image(cluster: Cluster, ns: str, stack: str) -> str:
    template = cluster.get("statefulset", f"{stack}-rabbitmq", ns)["spec"]["template"]
    return next(c["image"] for c in template["spec"]["containers"] if c["name"] == "rabbitmq")


def _crd_has_upgrade_policy(crd_file: Path) -> bool:
    crd = yaml.safe_load(crd_file.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return "upgradePolicy" in spec.get("properties", {})


def test_an_upgrade_from_the_previous_release_restarts_only_what_the_policy_allows(
        local: Cluster, ns: str, tmp_path: Path) -> None:
    cluster = local
    previous = _previous_release()
    commit = (previous / "commit").read_text().strip()
    print(f"previous release: {commit} ({(previous / 'why').read_text().strip()})")
    previous_binary = previous / "pingpong-operator"
    # The suite's own operator binary (what operator.sh runs without OPERATOR_BINARY) must never
    # be the previous release's: building that commit uses the same target directory. They are
    # equal only when the two commits' operator sources are (the script then copies this one).
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    own_binary = target / "debug" / "pingpong-operator"
    same_sources = "sources equal this working tree's" in (previous / "why").read_text()
    assert (_sha256(own_binary) == _sha256(previous_binary)) == same_sources, (
        f"{own_binary} and the previous release's binary ({commit}) are "
        f"{'different' if same_sources else 'the same'}")
    previous_crd = previous / "chart" / "crds" / "pingpongstacks.yaml"

    shared = cluster.host_operator("operator")
    base = int(cluster.env.get("CLUSTER_PORT_BASE", os.environ.get("CLUSTER_PORT_BASE", "16440")))
    op = cluster.host_operator("operator-release", base + 22)
    release = unique("pingpong-operator-release")
    release_ns = release
    kubeconfig = tmp_path / "release.kubeconfig"
    ephemeral = {"rabbitmq": {"storage": {"ephemeral": True}}}
    chosen_image = "rabbitmq:4.1-management"
    stacks = {
        "manual": ephemeral,
        "auto": {**ephemeral, "upgradePolicy": "Automatic"},
        "chosen": {"upgradePolicy": "Automatic",
                   "rabbitmq": {"storage": {"ephemeral": True}, "image": chosen_image}},
    }
    shared.stop()
    try:
        # 1. The previous release, installed as users install it.
        # The CRD exactly as the previous release has it (replace: an apply would keep the fields
        # other managers own).
        cluster.kubectl("replace", "-f", str(previous_crd))
        cluster.helm("install", release, str(previous / "chart"), "-n", release_ns,
                     "--create-namespace")
        _token_kubeconfig(cluster, release_ns, release, kubeconfig)
        _start(cluster, op, kubeconfig, release_ns,
               {**_deployment_env(cluster, release_ns, release),
                "OPERATOR_BINARY": str(previous_binary)})

        # 2. Stacks of the previous release. One from before `upgradePolicy` existed (a tag) gets
        # its policy with the new CRD, before the new operator runs.
        has_policy = _crd_has_upgrade_policy(previous_crd)
        for name, spec in stacks.items():
            cluster.apply(stack_doc(name, spec if has_policy
                                    else {k: v for k, v in spec.items() if k != "upgradePolicy"}), ns)
        for name in stacks:
            cluster.wait_ready(ns, name)
        before_images = {n: _images(cluster, ns, n) for n in stacks}
        before_broker = {n: _broker_image(cluster, ns, n) for n in stacks}
        assert before_broker["chosen"] == chosen_image
        assert before_broker["manual"] != NEW_BROKER_DEFAULT, (
            f"the previous release already defaults to {NEW_BROKER_DEFAULT}: pick a newer one here")
        before = {n: (_pods(cluster, ns, n), _workload_templates(cluster, ns, n)) for n in stacks}
        assert all(before[n][0] for n in stacks), before
        before_selectors = {n: _selectors(cluster, ns, n) for n in stacks}
        # A release before the unique selectors: the upgrade migrates the Automatic stacks'
        # workloads and leaves the Manual one's (README, Day-2 "Selectors").
        legacy = not _unique_selectors(before_selectors["manual"])

        # 3. The upgrade, as the README's "Upgrading the CRD" and "Install with Helm" say.
        op.stop()
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(ROOT / "manifests" / "crd.yaml"))
        if not has_policy:
            for name in ("auto", "chosen"):
                cluster.kubectl("patch", "pps", name, "-n", ns, "--type=merge",
                                "-p", '{"spec":{"upgradePolicy":"Automatic"}}')
        cluster.helm("upgrade", release, str(CHART), "-n", release_ns,
                     "--set", f"stackImages.rabbitmq={NEW_BROKER_DEFAULT}")
        env = _deployment_env(cluster, release_ns, release)
        assert env.get("PINGPONG_RABBITMQ_IMAGE") == NEW_BROKER_DEFAULT, env
        _start(cluster, op, kubeconfig, release_ns, env)

        # 4a. Automatic: the new default is another series, which waits for the running
        # broker's word on its feature flags; kwok's pods have no broker behind them, so it is
        # held with the reason, until the user (having checked the broker) names the image.
        def held() -> bool:
            cond = cluster.condition(ns, "auto", "Degraded")
            return bool(cond and cond["reason"] == "RabbitMQUpgradeRefused"
                        and NEW_BROKER_DEFAULT in cond["message"])
        eventually("auto's change of series held for the broker's answer", held, timeout=180)
        assert _broker_image(cluster, ns, "auto") == before_broker["auto"]
        cluster.kubectl("annotate", "pps", "auto", "-n", ns,
                        f"pingpong.dev/rabbitmq-upgrade={NEW_BROKER_DEFAULT}")
        # Then it rolls to the new default broker, records it, Ready, nothing available.
        eventually("auto's broker runs the new default",
                   lambda: _broker_image(cluster, ns, "auto") == NEW_BROKER_DEFAULT, timeout=180)
        eventually("auto recorded the new default",
                   lambda: _images(cluster, ns, "auto").get("rabbitmq") == {
                       "image": NEW_BROKER_DEFAULT, "source": "OperatorDefault"}, timeout=180)
        cluster.wait_ready(ns, "auto")
        cluster.wait_condition(ns, "auto", "UpgradeAvailable", "False", "ImagesCurrent", timeout=180)
        cluster.wait_condition(ns, "auto", "Upgrading", "False", "NoUpgradeInProgress", timeout=180)
        # The working tree's defaults, as the Automatic stack now runs them.
        current_defaults = {c: v["image"] for c, v in _images(cluster, ns, "auto").items()
                            if v.get("source") == "OperatorDefault"}

        # 4b. Manual: keeps every image it ran and shows each newer default as available.
        def manual_shows_available() -> dict[str, Any] | None:
            images = _images(cluster, ns, "manual")
            rabbitmq = images.get("rabbitmq") or {}
            if rabbitmq.get("available") != NEW_BROKER_DEFAULT:
                return None
            return images
        images = eventually("manual shows the new broker default as available",
                            manual_shows_available, timeout=180)
        for component, entry in images.items():
            ran = (before_images["manual"].get(component) or {}).get("image")
            if ran is not None:
                assert entry["image"] == ran, (component, entry, ran)
            if entry.get("source") == "OperatorDefault":
                newer = current_defaults.get(component)
                expected = newer if newer is not None and newer != entry["image"] else None
                assert entry.get("available") == expected, (component, entry, current_defaults)
        assert images["rabbitmq"]["image"] == before_broker["manual"]
        # A newer image and a pending selector migration: the reason is the image's, the message
        # names both.
        condition = cluster.wait_condition(ns, "manual", "UpgradeAvailable", "True",
                                           "NewerDefaultImage")
        assert NEW_BROKER_DEFAULT in condition["message"], condition
        if legacy:
            assert "still select pods by app.kubernetes.io/instance" in condition["message"], condition
            assert "StatefulSet manual-rabbitmq" in condition["message"], condition

        # 4c. The image the spec names stays; nothing is available for it.
        eventually("chosen keeps its broker image and shows nothing available",
                   lambda: _broker_image(cluster, ns, "chosen") == chosen_image
                   and (_images(cluster, ns, "chosen").get("rabbitmq") or {}).get("image") == chosen_image
                   and "available" not in _images(cluster, ns, "chosen")["rabbitmq"], timeout=180)
        assert _images(cluster, ns, "chosen")["rabbitmq"]["source"] == "Spec"

        # 4d. The Automatic stacks select by the unique selector (migrated, when the previous
        # release had the earlier one).
        for name in ("auto", "chosen"):
            eventually(f"{name}'s workloads select by {UNIQUE_SELECTOR}",
                       lambda name=name: _unique_selectors(_selectors(cluster, ns, name)),
                       timeout=240)

        # 4e. Every stack is Ready under the new operator, and after all that converged the Manual
        # stack restarted nothing: the same pods, pod templates and selectors.
        for name in stacks:
            cluster.wait_ready(ns, name, timeout=240)
        pods, templates = before["manual"]
        assert _workload_templates(cluster, ns, "manual") == templates
        assert _selectors(cluster, ns, "manual") == before_selectors["manual"]
        assert _pods(cluster, ns, "manual") == pods
        assert _broker_image(cluster, ns, "chosen") == chosen_image
        assert "available" not in (_images(cluster, ns, "auto").get("rabbitmq") or {})
    finally:
        op.stop()
        cluster.helm("uninstall", release, "-n", release_ns, "--wait", check=False)
        cluster.kubectl("delete", "namespace", release_ns, "--wait=false", "--ignore-not-found",
                        check=False)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(ROOT / "manifests" / "crd.yaml"))
        shared.start()
        eventually("the shared operator is ready", shared.ready, timeout=120)
        print(json.dumps({"previous_release": commit}))
