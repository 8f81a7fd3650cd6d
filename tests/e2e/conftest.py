"""Fixtures of the end-to-end suite (helpers live in e2e_helpers.py).

Which cluster:
- `E2E_START_CLUSTER=1` (what `make test` sets): the suite starts its own local control plane in
  `.cluster-test/` on ports 17440+ (so a developer's `make cluster` keeps running beside it), with
  the chart installed by `helm install` and the operator on the host, and stops it at the end
  (`E2E_KEEP_CLUSTER=1` keeps it).
- otherwise the cluster of `KUBECONFIG`: after `make cluster` that is `.cluster/admin.kubeconfig`
  (local mode: the suite can start and kill operator processes); any other kubeconfig (kind after
  `make up`) is external mode, with the operator in the cluster.
Each scenario gets its own namespace; on failure the stack, events, children and the operator's
log are printed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from e2e_helpers import ROOT, Cluster, missing, unique


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"report_{when}", None), "failed", False)
               for when in ("setup", "call"))


def _start_local(state_dir: Path, port_base: str) -> Cluster:
    env = {"CLUSTER_DIR": str(state_dir), "CLUSTER_PORT_BASE": port_base, "CLUSTER_SAMPLE": ""}
    result = subprocess.run([str(ROOT / "scripts" / "cluster" / "up.sh")], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=5400)
    if result.returncode != 0:
        missing(f"the local cluster did not start (scripts/cluster/up.sh exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return Cluster(kubeconfig=state_dir / "admin.kubeconfig", local=True, state_dir=state_dir, env=env)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.environ.get("E2E_START_CLUSTER") == "1":
        state_dir = ROOT / ".cluster-test"
        port_base = os.environ.get("E2E_PORT_BASE", "17440")
        c = _start_local(state_dir, port_base)
        try:
            yield c
        finally:
            if os.environ.get("E2E_KEEP_CLUSTER") != "1":
                subprocess.run([str(ROOT / "scripts" / "cluster" / "down.sh")], cwd=ROOT,
                               env={**os.environ, **c.env}, capture_output=True, timeout=300)
        return
    kubeconfig = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config").resolve()
    if not kubeconfig.exists():
        missing(f"no cluster: {kubeconfig} does not exist (run `make cluster` and export its "
                "KUBECONFIG, or `make up` for kind)")
    state_dir = kubeconfig.parent
    local = kubeconfig.name == "admin.kubeconfig" and (state_dir / "run").is_dir()
    env = {"CLUSTER_DIR": str(state_dir)} if local else {}
    if local and (state_dir / "run" / "kube-apiserver.pid").exists():
        ports = (state_dir / "admin.kubeconfig").read_text()
        port = int(ports.split("https://127.0.0.1:", 1)[1].split()[0])
        env["CLUSTER_PORT_BASE"] = str(port - 3)
    c = Cluster(kubeconfig=kubeconfig, local=local, state_dir=state_dir, env=env)
    if c.kubectl("get", "--raw", "/readyz", check=False, timeout=20).returncode != 0:
        missing(f"the cluster of {kubeconfig} does not answer")
    yield c


@pytest.fixture
def local(cluster: Cluster) -> Cluster:
    """The cluster, only where the suite controls the operator's processes (local mode)."""
    if not cluster.local:
        pytest.skip("needs the local cluster (operator as a host process): `make cluster`")
    return cluster


@pytest.fixture
def real_ns(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """Like `ns`, but its pods run on the local cluster's real node (kubelet + containerd), whose
    Gateway serves their routes at `cluster.gateway_url`. Fails under CI=true without it."""
    if not cluster.local:
        pytest.skip("needs the local cluster's real node (`make cluster` as root); on kind the "
                    "data path is tested through its Ingress")
    if cluster.gateway_url is None:
        missing("needs the local cluster's real node and its Gateway (scripts/cluster/node.sh): "
                "`sudo make cluster`, or `make test` as root; not started with CLUSTER_REAL_NODE=0 "
                "or without root")
    yield from _namespace(request, cluster, real=True)


@pytest.fixture
def ns(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards; its state is printed when the test fails."""
    yield from _namespace(request, cluster, real=False)


def _namespace(request: pytest.FixtureRequest, cluster: Cluster, real: bool) -> Iterator[str]:
    short = request.node.name.split("[", 1)[0].removeprefix("test_").replace("_", "-")[:30].strip("-")
    name = unique(f"e2e-{short}")
    if real:
        cluster.create_real_node_namespace(name)
    else:
        cluster.create_namespace(name)
    try:
        yield name
    finally:
        if _failed(request):
            print(f"\n===== state of namespace {name} ({request.node.name}) =====")
            print(cluster.dump(name))
        if os.environ.get("E2E_KEEP_NAMESPACE") != "1":
            cluster.delete_namespace(name)

