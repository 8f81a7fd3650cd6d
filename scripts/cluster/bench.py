"""Operator benchmark on the local control plane (`make bench-operator-cluster`).

Starts a control plane of its own (.cluster-bench/, ports 18440+), creates UNRELATED ConfigMaps and
Secrets (default 5,000) that the operator must ignore, then for each N in STACKS (default 1,50,200)
applies N stacks at once (one per namespace, ephemeral broker storage) and measures:
  - seconds from `kubectl apply` to every stack Ready (one `kubectl get` of all stacks every
    second: a `kubectl wait` per stack costs a process each, seconds of the 2 cores at N = 200),
  - reconciles (the operator's reconcile histogram count) and API requests (the API server's audit
    log of the operator's ServiceAccount) in that window, and requests per reconcile,
  - the operator process's RSS after the round and its CPU seconds in the window.
Prints a Markdown table; with --write, replaces the cluster section of BENCHMARKS.md.
  - the child applies the operator skipped as unchanged (`pingpong_operator_child_operations_total`).
OPERATOR_PROFILE=release measures a release build of the operator (default: debug).
BENCH_FLOOR=1 adds the control plane's floor for the largest N: the operator stopped, the same
stacks' children (`pingpong-operator render`) applied by 8 concurrent `kubectl apply --server-side`
(the operator's 8 reconciles at once), and the seconds until every workload is ready.
CLUSTER_CONTROLLER_QPS sets kube-controller-manager's and kube-scheduler's client rate as QPS/burst
(scripts/cluster/up.sh); the benchmark's default is 100/200, what managed control planes commonly
run; `upstream` keeps upstream's defaults (20/30 and 50/100), under which kube-controller-manager's
own ReplicaSet, pod and status writes for 200 stacks are rate-limited and set the floor (about
100 s on 2 cores, against about 40 s at 100/200; BENCHMARKS.md).
BENCH_OPERATOR_RUST_LOG sets the operator's log filter (default warn; `info` logs each reconcile
with what triggered it, in .cluster-bench/operator.log).
Usage: .venv/bin/python scripts/cluster/bench.py [--write]
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import yaml  # noqa: E402

from e2e_helpers import Cluster, metric_sum, stack_doc  # noqa: E402

STACKS = [int(n) for n in os.environ.get("STACKS", "1,50,200").split(",")]
UNRELATED = int(os.environ.get("UNRELATED", "5000"))
PORT_BASE = os.environ.get("BENCH_PORT_BASE", "18440")
PROFILE = os.environ.get("OPERATOR_PROFILE", "debug")
FLOOR = os.environ.get("BENCH_FLOOR", "0") == "1"
FLOOR_APPLIERS = 8
CONTROLLER_QPS = os.environ.get("CLUSTER_CONTROLLER_QPS", "100/200")
USER = "system:serviceaccount:pingpong-system:pingpong-operator"
MARK_BEGIN = "<!-- operator cluster results: edit only this section -->"
MARK_END = "<!-- end operator cluster results -->"


def versions() -> dict[str, str]:
    text = (ROOT / "scripts" / "cluster" / "versions.sh").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", text, re.MULTILINE))


def machine() -> str:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1048576
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.1f} GiB RAM, Linux {platform.release()}"


def unrelated(cluster: Cluster, count: int) -> None:
    cluster.kubectl("create", "namespace", "bench-unrelated")
    batch = 500
    for start in range(0, count, batch):
        items = []
        for i in range(start, min(start + batch, count)):
            kind = "ConfigMap" if i % 2 == 0 else "Secret"
            body = {"data": {"k": "v" * 64}} if kind == "ConfigMap" else {"stringData": {"k": "v" * 64}}
            items.append({"apiVersion": "v1", "kind": kind,
                          "metadata": {"name": f"unrelated-{i}", "labels": {"app": "someone-else"}}, **body})
        cluster.kubectl("create", "-n", "bench-unrelated", "-f", "-",
                        input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}), timeout=600)


def requests_since(cluster: Cluster, since: str) -> dict[str, int]:
    """The operator's requests since `since`, counted by verb and resource (`patch deployments`)."""
    counts: dict[str, int] = {}
    for e in cluster.audit_events(USER):
        if e.get("stageTimestamp", "") < since:
            continue
        ref = e.get("objectRef", {})
        resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = f"{e.get('verb', '?')} {resource}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def skipped_applies(metrics: dict[str, float]) -> float:
    """Child applies skipped as unchanged so far (0 for an operator that never skips)."""
    return metric_sum(metrics, "pingpong_operator_child_operations_total", operation="skip")


def round_(cluster: Cluster, n: int) -> dict[str, float]:
    op = cluster.host_operator("operator")
    namespaces = [f"bench-{n}-{i}" for i in range(n)]
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), timeout=600)
    reconciles0 = metric_sum(op.metrics(), "pingpong_operator_reconcile_duration_seconds_count")
    skipped0 = skipped_applies(op.metrics())
    cpu0 = op.cpu_seconds()
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    start = time.monotonic()
    stacks = [{**stack_doc("s", {"rabbitmq": {"storage": {"ephemeral": True}}}),
               "metadata": {"name": "s", "namespace": ns}} for ns in namespaces]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(stacks), timeout=600)
    wanted = set(namespaces)
    while True:
        listed = cluster.kubectl("get", "pps", "-A", "-o", "json", timeout=120)
        ready = {item["metadata"]["namespace"] for item in json.loads(listed.stdout)["items"]
                 if any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (item.get("status") or {}).get("conditions", []))}
        if wanted <= ready:
            break
        if time.monotonic() - start > 1800:
            raise SystemExit(f"{len(wanted - ready)} of {n} stacks not Ready after 1800 s")
        time.sleep(1)
    seconds = time.monotonic() - start
    time.sleep(2)  # let the audit log flush the last batch
    reconciles = metric_sum(op.metrics(), "pingpong_operator_reconcile_duration_seconds_count") - reconciles0
    skipped = skipped_applies(op.metrics()) - skipped0
    by_kind = requests_since(cluster, since)
    requests = sum(by_kind.values())
    result = {"n": n, "seconds": seconds, "reconciles": reconciles, "requests": requests, "by_kind": by_kind,
              "skipped": skipped,
              "per_reconcile": requests / reconciles if reconciles else 0.0,
              "rss_mib": op.rss_bytes() / 1048576, "cpu": op.cpu_seconds() - cpu0}
    cluster.kubectl("delete", "namespace", *namespaces, "--wait=false", timeout=600)
    return result


def workloads_ready(cluster: Cluster, prefix: str) -> bool:
    """Whether every Deployment and StatefulSet of the namespaces named `prefix*` is ready."""
    listed = cluster.kubectl("get", "deployments,statefulsets", "-A", "-o", "json", timeout=120)
    mine = [i for i in json.loads(listed.stdout)["items"] if i["metadata"]["namespace"].startswith(prefix)]
    return bool(mine) and all((i.get("status") or {}).get("readyReplicas", 0) >= i["spec"].get("replicas", 1)
                              for i in mine)


def floor_round(cluster: Cluster, n: int) -> dict[str, float]:
    """The same N stacks' children applied without the operator: what the control plane takes."""
    cluster.host_operator("operator").stop()
    namespaces = [f"floor-{n}-{i}" for i in range(n)]
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), timeout=600)
    stack = yaml.safe_dump(stack_doc("s", {"rabbitmq": {"storage": {"ephemeral": True}}}))
    binary = subprocess.run([str(ROOT / "scripts" / "cluster" / "operator.sh"), "binary"], cwd=ROOT,
                            env={**os.environ, **cluster.env}, capture_output=True, text=True, check=True)
    children: list[str] = []
    for ns in namespaces:
        rendered = subprocess.run([binary.stdout.strip(), "render", "-f", "-", "-n", ns], input=stack,
                                  capture_output=True, text=True, check=True).stdout
        children += [d for d in rendered.split("\n---\n") if d.strip()]
    per = -(-len(children) // FLOOR_APPLIERS)
    start = time.monotonic()
    appliers = [subprocess.Popen(["kubectl", "apply", "--server-side", "-f", "-"], env=cluster._env(), cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
                for _ in range(FLOOR_APPLIERS)]
    for i, applier in enumerate(appliers):
        assert applier.stdin is not None
        applier.stdin.write("\n---\n".join(children[i * per:(i + 1) * per]))
        applier.stdin.close()
    if any(applier.wait(timeout=1800) != 0 for applier in appliers):
        raise SystemExit("kubectl apply of the rendered children failed")
    applied = time.monotonic() - start
    while not workloads_ready(cluster, f"floor-{n}-"):
        if time.monotonic() - start > 1800:
            raise SystemExit(f"the {n} stacks' workloads were not ready after 1800 s")
        time.sleep(1)
    return {"n": n, "objects": len(children), "applied": applied, "seconds": time.monotonic() - start}


def main() -> int:
    state = ROOT / ".cluster-bench"
    env = {"CLUSTER_DIR": str(state), "CLUSTER_PORT_BASE": PORT_BASE, "CLUSTER_SAMPLE": "",
           "CLUSTER_WAIT": "300", "OPERATOR_RUST_LOG": os.environ.get("BENCH_OPERATOR_RUST_LOG", "warn"),
           "CLUSTER_CONTROLLER_QPS": CONTROLLER_QPS}
    subprocess.run([str(ROOT / "scripts" / "cluster" / "up.sh")], cwd=ROOT, env={**os.environ, **env},
                   check=True)
    cluster = Cluster(kubeconfig=state / "admin.kubeconfig", local=True, state_dir=state, env=env)
    try:
        unrelated(cluster, UNRELATED)
        rows = [round_(cluster, n) for n in STACKS]
        floor = floor_round(cluster, max(STACKS)) if FLOOR else None
    finally:
        subprocess.run([str(ROOT / "scripts" / "cluster" / "down.sh")], cwd=ROOT, env={**os.environ, **env})
    v = versions()
    lines = [
        MARK_BEGIN,
        f"Command: `make bench-operator-cluster` (`scripts/cluster/bench.py`), {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"on {machine()}; Kubernetes {v['KUBERNETES_VERSION']}, etcd {v['ETCD_VERSION']}, kwok {v['KWOK_VERSION']}; "
        f"operator {PROFILE} build on the host as its ServiceAccount; {UNRELATED} unrelated ConfigMaps and Secrets present. "
        "N stacks (one per namespace, ephemeral broker) applied at once; requests are the operator's, from the "
        "API server's audit log; the control plane shares the 2 cores; kube-controller-manager's and "
        "kube-scheduler's client rate "
        + (f"{CONTROLLER_QPS} (QPS/burst, `CLUSTER_CONTROLLER_QPS`)." if CONTROLLER_QPS != "upstream"
           else "upstream's defaults (20/30 and 50/100 QPS/burst, `CLUSTER_CONTROLLER_QPS=upstream`)."),
        "",
        "| stacks | apply → all Ready (s) | reconciles | API requests | requests / reconcile | applies skipped | operator RSS (MiB) | operator CPU (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['n']} | {r['seconds']:.1f} | {r['reconciles']:.0f} | {r['requests']} | "
                     f"{r['per_reconcile']:.1f} | {r['skipped']:.0f} | {r['rss_mib']:.1f} | {r['cpu']:.2f} |")
    last = rows[-1]
    if last["reconciles"]:
        top = sorted(last["by_kind"].items(), key=lambda kv: -kv[1])
        lines += ["", f"Requests per reconcile at N = {last['n']}, by verb and resource: " + ", ".join(
            f"{key} {count / last['reconciles']:.2f}" for key, count in top if count / last["reconciles"] >= 0.05) + "."]
    if floor:
        lines += ["", f"Floor without the operator at N = {floor['n']}: its {floor['objects']} children "
                  f"(`pingpong-operator render`) applied by {FLOOR_APPLIERS} concurrent `kubectl apply --server-side` "
                  f"took {floor['applied']:.1f} s, and every workload was ready {floor['seconds']:.1f} s after the start."]
    lines.append(MARK_END)
    section = "\n".join(lines)
    print(section)
    if "--write" in sys.argv:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text()
        if MARK_BEGIN in text:
            text = text[:text.index(MARK_BEGIN)] + section + text[text.index(MARK_END) + len(MARK_END):]
        else:
            text = text.rstrip() + "\n\n## Operator on the local control plane\n\n" + section + "\n"
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
