"""The end-to-end suite's view of a cluster: kubectl and helm calls, waits, the operator's metrics
and log, and a dump of a namespace's state for failures.

Two modes:
- local: the Docker-less control plane of scripts/cluster (etcd, kube-apiserver, controller-manager,
  scheduler, kwok), with the operator as a host process authenticated as the chart's ServiceAccount.
  The suite can start and kill operator processes and read the API server's audit log.
- external: any kubeconfig (kind after `make up`), with the operator running in the cluster.
  Scenarios that need host processes (leader election, the audit log) are skipped there.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
CHART = ROOT / "charts" / "pingpong-operator"
OPERATOR_NAMESPACE = os.environ.get("OPERATOR_NAMESPACE", "pingpong-system")
OPERATOR_RELEASE = os.environ.get("OPERATOR_RELEASE", "pingpong-operator")
MANAGED_BY = "app.kubernetes.io/managed-by=pingpong-operator"
# The label of the local cluster's real node (scripts/cluster/node.sh); its taint has the same key.
REAL_NODE_LABEL = "pingpong.dev/node=real"
# The kinds the operator creates for a stack (what a failure dump lists).
CHILD_KINDS = ("statefulsets,deployments,services,secrets,configmaps,persistentvolumeclaims,"
               "ingresses,networkpolicies,poddisruptionbudgets")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(reason)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def eventually(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    """Poll `check` until it returns a truthy value; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except subprocess.CalledProcessError as error:
            last = f"{error.cmd}: {error.stderr or error.stdout}"
        except (OSError, ValueError, KeyError) as error:  # connection refused, half-written object
            last = repr(error)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format → {'name{labels}': value} (labels as written)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in metrics.items():
        base = key.split("{", 1)[0]
        if base != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


@dataclass
class HostOperator:
    """An operator process on the host (local mode), managed by scripts/cluster/operator.sh."""

    cluster: "Cluster"
    name: str
    port: int
    # Another kubeconfig than the ServiceAccount's own (same token), e.g. through a proxy.
    kubeconfig: Path | None = None

    @property
    def identity(self) -> str:
        return f"host-{self.name}"

    @property
    def log_path(self) -> Path:
        return self.cluster.state_dir / f"{self.name}.log"

    def start(self) -> None:
        env = {"OPERATOR_KUBECONFIG": str(self.kubeconfig)} if self.kubeconfig else None
        self.cluster.operator_script("start", self.name, str(self.port), env=env)

    def stop(self) -> None:
        self.cluster.operator_script("stop", self.name)

    def kill(self) -> None:
        self.cluster.operator_script("kill", self.name)

    def pid(self) -> int | None:
        path = self.cluster.state_dir / "run" / f"{self.name}.pid"
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        """`/readyz` answers 200 (a standby, or a leader whose cache synced)."""
        import requests  # the venv has it; imported late so collection never needs it

        return requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200

    def metrics(self) -> dict[str, float]:
        import requests  # the venv has it; imported late so collection never needs it

        response = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        response.raise_for_status()
        return parse_metrics(response.text)

    def log(self, tail: int = 200) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return f"(no log at {self.log_path})"

    def rss_bytes(self) -> int:
        pid = self.pid()
        if pid is None:
            return 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        pid = self.pid()
        if pid is None:
            return 0.0
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Cluster:
    kubeconfig: Path
    local: bool
    state_dir: Path = field(default_factory=lambda: ROOT / ".cluster")
    env: dict[str, str] = field(default_factory=dict)

    # --- plumbing -------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env["KUBECONFIG"] = str(self.kubeconfig)
        if self.local:
            env["PATH"] = f"{self.state_dir / 'bin'}:{env.get('PATH', '')}"
            env["CLUSTER_DIR"] = str(self.state_dir)
        return env

    def run(self, args: list[str], *, input: str | None = None, check: bool = True,
            timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(args, input=input, capture_output=True, text=True,
                                env={**self._env(), **(env or {})}, timeout=timeout, cwd=ROOT)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, " ".join(args),
                                                result.stdout, result.stderr)
        return result

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(["kubectl", *args], input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(["helm", *args], check=check, timeout=timeout)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None,
            selector: str | None = None, managed_fields: bool = False) -> Any:
        """`kubectl get -o json`; `managed_fields` keeps metadata.managedFields (kubectl drops
        them unless asked)."""
        args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
        if managed_fields:
            args.append("--show-managed-fields")
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args).stdout)

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
        if namespace:
            args += ["-n", namespace]
        return bool(self.kubectl(*args).stdout.strip())

    def apply(self, doc: dict[str, Any] | str, namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=text, check=check)

    def operator_script(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.run([str(ROOT / "scripts" / "cluster" / "operator.sh"), *args], timeout=600, env=env)

    # --- stacks ---------------------------------------------------------------------------------
    def stack(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get("pingpongstack", name, namespace)

    def condition(self, namespace: str, name: str, ctype: str) -> dict[str, Any] | None:
        status = self.stack(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions", []) if c.get("type") == ctype), None)

    def wait_ready(self, namespace: str, name: str, timeout: int = 180) -> dict[str, Any]:
        result = self.kubectl("wait", "-n", namespace, "--for=condition=Ready",
                              f"pingpongstack/{name}", f"--timeout={timeout}s", check=False,
                              timeout=timeout + 30)
        assert result.returncode == 0, (
            f"pingpongstack {namespace}/{name} did not become Ready: {result.stderr}")
        return self.stack(namespace, name)

    def wait_condition(self, namespace: str, name: str, ctype: str, status: str,
                       reason: str | None = None, timeout: float = 90) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = self.condition(namespace, name, ctype)
            if cond and cond.get("status") == status and (reason is None or cond.get("reason") == reason):
                return cond
            return None

        return eventually(f"{namespace}/{name} condition {ctype}={status} reason={reason}",
                          check, timeout=timeout)

    def create_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)

    # --- the real node (scripts/cluster/node.sh) ------------------------------------------------
    @property
    def gateway_url(self) -> str | None:
        """The Gateway's URL on this host when the local cluster has its real node, else None."""
        path = self.state_dir / "gateway-url"
        return path.read_text().strip() if self.local and path.is_file() else None

    def local_image(self, name: str) -> str:
        """The reference images/build.sh built for NAME (`rabbitmq`, `ping`, ...) for the real node.
        The operator's default broker (RabbitMQ 4.2) is not built here: stacks on the real node
        name this one (Debian's RabbitMQ) in `spec.rabbitmq.image`."""
        for line in (self.state_dir / "images.txt").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == name:
                return fields[1]
        raise AssertionError(f"no image {name} in {self.state_dir / 'images.txt'} (images/build.sh)")

    def create_real_node_namespace(self, name: str) -> None:
        """A namespace whose pods run on the real node (PodNodeSelector + PodTolerationRestriction)."""
        self.create_namespace(name)
        self.kubectl("annotate", "namespace", name,
                     f"scheduler.alpha.kubernetes.io/node-selector={REAL_NODE_LABEL}",
                     "scheduler.alpha.kubernetes.io/defaultTolerations="
                     + json.dumps([{"key": "pingpong.dev/node", "operator": "Equal",
                                    "value": "real", "effect": "NoSchedule"}]))

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    # --- the operator ---------------------------------------------------------------------------
    def host_operator(self, name: str = "operator", port: int | None = None) -> HostOperator:
        base = int(self.env.get("CLUSTER_PORT_BASE", os.environ.get("CLUSTER_PORT_BASE", "16440")))
        return HostOperator(self, name, port or base + 20)

    def lease_holder(self) -> str:
        """`holderIdentity` of the operator's leader Lease ("" when released)."""
        lease = self.get("lease", "pingpong-operator-leader", OPERATOR_NAMESPACE)
        return lease["spec"].get("holderIdentity", "")

    def operator_log(self, tail: int = 60) -> str:
        if self.local:
            logs = []
            for path in sorted(self.state_dir.glob("operator*.log")):
                lines = [line[:600] for line in path.read_text(errors="replace").splitlines()[-tail:]]
                logs.append(f"--- {path.name} ---\n" + "\n".join(lines))
            return "\n".join(logs) or "(no operator log)"
        result = self.kubectl("-n", OPERATOR_NAMESPACE, "logs", f"deployment/{OPERATOR_RELEASE}",
                              f"--tail={tail}", check=False)
        return result.stdout + result.stderr

    def audit_events(self, user: str) -> list[dict[str, Any]]:
        """Audit events of one user (local mode: the API server's audit log, at Metadata level;
        lists of child kinds by the operator's namespace's ServiceAccounts carry their response,
        see scripts/cluster/up.sh)."""
        events = []
        for path in sorted(self.state_dir.glob("logs/audit*.log")):
            with path.open(errors="replace") as f:
                for line in f:
                    if user not in line:
                        continue
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if event.get("user", {}).get("username") == user:
                        events.append(event)
        return events

    def dump(self, namespace: str) -> str:
        parts = []
        for args in (["get", "pingpongstacks", "-o", "yaml"],
                     ["get", CHILD_KINDS, "-o", "wide"],
                     ["get", "pods", "-o", "wide"],
                     ["get", "events", "--sort-by=.lastTimestamp"]):
            result = self.kubectl("-n", namespace, *args, check=False)
            parts.append(f"$ kubectl -n {namespace} {' '.join(args)}\n{result.stdout}{result.stderr}")
        parts.append("--- operator log ---\n" + self.operator_log())
        return "\n".join(parts)


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def stack_doc(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "pingpong.dev/v1alpha1", "kind": "PingPongStack",
            "metadata": {"name": name}, "spec": spec or {}}


def children(cluster: Cluster, namespace: str, stack: str) -> dict[str, list[str]]:
    """Every object in `namespace` labelled as this stack's, by kind."""
    out: dict[str, list[str]] = {}
    items = cluster.get(CHILD_KINDS, namespace=namespace,
                        selector=f"app.kubernetes.io/instance={stack},{MANAGED_BY}")["items"]
    for item in items:
        out.setdefault(item["kind"], []).append(item["metadata"]["name"])
    return out


def expected_error(path: Path) -> str:
    """The `# expect-error: <text>` line every bad sample carries."""
    for line in path.read_text().splitlines():
        match = re.match(r"#\s*expect-error:\s*(.+)", line)
        if match:
            return match.group(1).strip()
    raise AssertionError(f"{path} has no '# expect-error: ...' line naming what the API server says")


def terminate(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def names(items: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(i["metadata"]["name"] for i in items)


def set_route_status(cluster: Cluster, namespace: str, route: str, parent: dict[str, str],
                     accepted: tuple[str, str, str] = ("True", "Accepted", "accepted"),
                     resolved: tuple[str, str, str] = ("True", "ResolvedRefs", "resolved")) -> None:
    """Writes an HTTPRoute's `status.parents` for `parent` as a Gateway controller would: the local
    control plane has none on its kwok nodes. `accepted` and `resolved` are (status, reason,
    message) of the `Accepted` and `ResolvedRefs` conditions, at the route's current generation."""
    obj = eventually(f"HTTPRoute {namespace}/{route}",
                     lambda: cluster.exists("httproute", route, namespace)
                     and cluster.get("httproute", route, namespace))
    generation = obj["metadata"]["generation"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def condition(ctype: str, value: tuple[str, str, str]) -> dict[str, Any]:
        return {"type": ctype, "status": value[0], "reason": value[1], "message": value[2],
                "observedGeneration": generation, "lastTransitionTime": now}

    status = {"status": {"parents": [{
        "controllerName": "example.com/e2e-gateway-controller",
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", **parent},
        "conditions": [condition("Accepted", accepted), condition("ResolvedRefs", resolved)],
    }]}}
    cluster.kubectl("patch", "httproute", route, "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps(status))


def operator_user(cluster: Cluster) -> str:
    """The user name of the operator's ServiceAccount (the chart's, named after the release)."""
    return ("system:serviceaccount:pingpong-system:"
            f"{cluster.env.get('OPERATOR_RELEASE', 'pingpong-operator')}")


def operator_requests_about(cluster: Cluster, namespace: str, since: float) -> list[str]:
    """`verb resource/name` of every request the operator's ServiceAccount made about objects in
    `namespace` since `since` (epoch seconds), from the API server's audit log (local mode)."""
    out = []
    for event in cluster.audit_events(operator_user(cluster)):
        ref = event.get("objectRef", {})
        stamp = event.get("stageTimestamp", "")
        if ref.get("namespace") != namespace or not stamp:
            continue
        if datetime.fromisoformat(stamp).timestamp() >= since:
            out.append(f"{event['verb']} {ref.get('resource')}/{ref.get('name', '')}")
    return out
