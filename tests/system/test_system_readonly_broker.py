"""The broker as the operator renders it, with a read-only root filesystem, on the real
rabbitmq-server of this host.

The operator's `render` output for manifests/samples/minimal.yaml gives the broker pod: its
containers, their volume mounts, the ConfigMap and Secrets behind them and the environment. The
test materializes every volume (ConfigMap and Secret files with the rendered content, a fresh
directory per emptyDir and for the data claim) and runs
1. the init container's command (the Erlang cookie copy), then
2. `rabbitmq-server`,
each in a private mount namespace (readonly_root.py, as root) where `/` is read-only and only the
pod's volumes are mounted at their rendered paths, as the user the image runs as. The node must
boot, answer the liveness probe's command from inside the namespace, accept a connection with the
rendered credentials and confirm persistent publishes into a durable queue of the rendered type;
after a restart on the same volumes (a container restart) the messages are still there.

What differs from the pod, and why it does not weaken the claim:
- the host's RabbitMQ (Debian's package, 3.10 here; the image runs 4.x) at the Debian paths,
  which are the image's (`SYS_PREFIX` empty in both);
- a second file in the config directory moves the AMQP, management and Prometheus ports to free
  ones (the shared broker holds the defaults), and the node name and distribution port are
  private; everything else is the operator's configuration;
- the network namespace is the host's (epmd is shared, like on a node the pods share).

Never touches the shared broker: own node name, ports and directories; stopped by pid.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from system_helpers import (
    ROOT, Broker, Loadgen, Proc, base_env, free_port, listening, missing, wait_until,
)

SAMPLE = ROOT / "manifests" / "samples" / "minimal.yaml"
HELPER = Path(__file__).resolve().parent / "readonly_root.py"
# The image's user; on the host the Debian package's user of the same role.
BROKER_USER = "rabbitmq"


def _operator() -> Path:
    bin_dir = Path(os.environ.get("PINGPONG_BIN_DIR", ROOT / "target" / "debug"))
    binary = bin_dir / "pingpong-operator"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"missing {binary}: `cargo build -p pingpong-operator` or set PINGPONG_BIN_DIR",
                    pytrace=False)
    return binary


def _rendered() -> list[dict[str, Any]]:
    result = subprocess.run([str(_operator()), "render", "-f", str(SAMPLE), "--namespace", "ro"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _secret_data(secret: dict[str, Any]) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return data


class Pod:
    """The rendered broker pod's volumes on disk and its containers' mounts and env."""

    def __init__(self, objects: list[dict[str, Any]], base: Path) -> None:
        self.objects = objects
        sts = next(o for o in objects if o["kind"] == "StatefulSet"
                   and o["metadata"]["labels"]["app.kubernetes.io/component"] == "broker")
        self.spec = sts["spec"]["template"]["spec"]
        self.claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
        self.base = base
        self.user = pwd.getpwnam(BROKER_USER)
        self.volumes = {v["name"]: self._materialize(v) for v in self.spec["volumes"]}
        for claim in self.claims:
            self.volumes[claim] = self._dir(f"claim-{claim}", writable=True)

    def _dir(self, name: str, writable: bool) -> Path:
        path = self.base / name
        path.mkdir()
        if writable:  # an emptyDir or a claim, owned by the pod's fsGroup user
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def _materialize(self, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        if "emptyDir" in volume:
            return self._dir(f"empty-{name}", writable=True)
        if "configMap" in volume:
            source = volume["configMap"]
            data = {k: v.encode() for k, v in
                    _one(self.objects, "ConfigMap", source["name"])["data"].items()}
        elif "secret" in volume:
            source = volume["secret"]
            data = _secret_data(_one(self.objects, "Secret", source["secretName"]))
        else:
            raise AssertionError(f"volume {name}: unexpected source {sorted(volume)}")
        path = self._dir(f"files-{name}", writable=False)
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        mode = source.get("defaultMode", 0o644)
        for item in items:
            file = path / item["path"]
            file.write_bytes(data[item["key"]])
            os.chown(file, self.user.pw_uid, self.user.pw_gid)
            os.chmod(file, item.get("mode", mode))
        os.chmod(path, 0o755)
        return path

    def container(self, name: str) -> dict[str, Any]:
        every = self.spec.get("initContainers", []) + self.spec["containers"]
        return next(c for c in every if c["name"] == name)

    def mounts(self, container: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"source": str(self.volumes[m["name"]]), "path": m["mountPath"],
                 "read_only": bool(m.get("readOnly", False))}
                for m in container.get("volumeMounts", [])]

    def writable_paths(self, container: dict[str, Any]) -> list[str]:
        return [m["path"] for m in self.mounts(container) if not m["read_only"]]

    def env(self, container: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
        """The container's variables as the kubelet sets them: Secret keys, field refs, and
        `$(VAR)` references to earlier variables expanded."""
        out: dict[str, str] = {}
        for var in container.get("env", []):
            source = var.get("valueFrom")
            if source is None:
                value = var.get("value", "")
                for key, known in out.items():
                    value = value.replace(f"$({key})", known)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = _secret_data(_one(self.objects, "Secret", ref["name"]))[ref["key"]].decode()
            elif "fieldRef" in source:
                value = fields[source["fieldRef"]["fieldPath"]]
            else:
                raise AssertionError(f"variable {var['name']}: unexpected source {source}")
            out[var["name"]] = value
        return out


class ReadOnlyNode:
    """rabbitmq-server in a read-only-root mount namespace, with the pod's volumes."""

    def __init__(self, pod: Pod, base: Path) -> None:
        self.pod = pod
        self.base = base
        self.broker = pod.container("rabbitmq")
        suffix = uuid.uuid4().hex[:8]
        self.port, self.management, self.prometheus, self.dist_port = (
            free_port(), free_port(), free_port(), free_port())
        self.node = f"pp-ro-{suffix}@localhost"
        self.env = pod.env(self.broker, {"metadata.name": f"pp-ro-{suffix}",
                                         "metadata.namespace": "ro"})
        # Private identity and ports (see the module docs); HOME and PATH as the image sets them.
        self.env.update({
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "HOME": "/var/lib/rabbitmq",
            # The server's own scripts first, as /opt/rabbitmq/sbin is in the image.
            "PATH": "/usr/lib/rabbitmq/bin:" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "RUNNING_UNDER_SYSTEMD": "true",
        })
        config = next(m for m in self.broker["volumeMounts"] if m["mountPath"] == "/etc/rabbitmq/conf.d")
        ports = pod.volumes[config["name"]] / "90-system-test-ports.conf"
        ports.write_text(f"listeners.tcp.default = {self.port}\n"
                         f"management.tcp.port = {self.management}\n"
                         f"prometheus.tcp.port = {self.prometheus}\n")
        os.chmod(ports, 0o444)
        self.proc: Proc | None = None
        self.starts = 0

    def _spec(self, container: dict[str, Any], argv: list[str], env: dict[str, str]) -> Path:
        spec = {"mounts": self.pod.mounts(container), "scratch": str(self.base), "user": BROKER_USER,
                "env": env, "argv": argv, "cwd": "/"}
        path = self.base / f"spec-{container['name']}-{self.starts}.json"
        path.write_text(json.dumps(spec))
        return path

    def _namespaced(self, container: dict[str, Any], argv: list[str], env: dict[str, str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", sys.executable, str(HELPER),
                str(self._spec(container, argv, env))]

    def run_init(self) -> None:
        init = self.pod.container("setup-erlang-cookie")
        argv = init["command"] + init.get("args", [])
        env = {"PATH": self.env["PATH"], "HOME": "/var/lib/rabbitmq"}
        result = subprocess.run(self._namespaced(init, argv, env), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"init container failed:\n{result.stdout}{result.stderr}"

    def start(self, timeout: float = 180.0) -> None:
        self.starts += 1
        server = shutil.which("rabbitmq-server", path="/usr/lib/rabbitmq/bin") or "rabbitmq-server"
        argv = self._namespaced(self.broker, [server], self.env)
        self.proc = Proc(f"rabbitmq-ro#{self.starts}", argv, base_env(), self.base / "server.log")
        self.proc.start()
        proc = self.proc

        def up() -> bool:
            assert proc.alive(), f"rabbitmq-server exited:\n{proc.log_tail(120)}"
            return listening("127.0.0.1", self.port)

        wait_until(up, timeout, f"the read-only node {self.node} on port {self.port}", 0.2)

    def in_namespace(self, argv: list[str], timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """`argv` as the broker user inside the running node's mount namespace (a probe)."""
        assert self.proc is not None
        command = ["nsenter", f"--target={self.proc.pid}", "--mount", "--", "setpriv",
                   f"--reuid={BROKER_USER}", f"--regid={BROKER_USER}", "--init-groups", "--", *argv]
        return subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, as the kubelet stops a container; the node shuts down cleanly."""
        if self.proc is None:
            return
        code = self.proc.stop(timeout=90)
        wait_until(lambda: not listening("127.0.0.1", self.port), 30, "the node's port to close")
        log = self.proc.log_tail(40)
        self.proc = None
        assert code == 0, f"rabbitmq-server did not stop cleanly on SIGTERM (exit {code}):\n{log}"

    def written(self) -> dict[str, list[str]]:
        """What the node wrote into each writable volume (for the report)."""
        out = {}
        for mount in self.pod.mounts(self.broker):
            if not mount["read_only"]:
                root = Path(mount["source"])
                out[mount["path"]] = sorted(str(p.relative_to(root)) for p in root.iterdir())
        return out


@pytest.fixture
def node() -> Iterator[ReadOnlyNode]:
    if os.geteuid() != 0:
        missing("the read-only broker test needs root (a private mount namespace)")
    for tool in ("unshare", "nsenter", "setpriv", "mount", "rabbitmq-server"):
        if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
            missing(f"{tool} is not installed")
    try:
        pwd.getpwnam(BROKER_USER)
    except KeyError:
        missing(f"no user {BROKER_USER} (Debian: apt-get install rabbitmq-server)")
    # Under /var/tmp: the namespace may overlay /tmp and /etc to create mount points.
    base = Path(tempfile.mkdtemp(prefix="pp-ro-broker-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    pod = Pod(_rendered(), base)
    ro = ReadOnlyNode(pod, base)
    try:
        yield ro
    finally:
        if ro.proc is not None:
            ro.proc.kill()
        print(f"\n--- read-only node log ---\n{(base / 'server.log').read_text(errors='replace')[-6000:]}"
              if (base / "server.log").exists() else "")
        shutil.rmtree(base, ignore_errors=True)


def test_rendered_broker_runs_with_a_read_only_root(node: ReadOnlyNode, bins: dict[str, Path]) -> None:
    pod = node.pod
    for container in (node.broker, pod.container("setup-erlang-cookie")):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
    # Every writable mount is an emptyDir or the data claim, never a ConfigMap or Secret.
    kinds = {v["name"]: next(k for k in v if k != "name") for v in pod.spec["volumes"]}
    for mount in node.broker["volumeMounts"]:
        if not mount.get("readOnly", False):
            assert mount["name"] in pod.claims or kinds[mount["name"]] == "emptyDir", mount

    node.run_init()
    cookie = pod.volumes["rabbitmq-home"] / ".erlang.cookie"
    assert cookie.stat().st_mode & 0o777 == 0o600 and cookie.stat().st_uid == pod.user.pw_uid

    node.start()
    probe = node.broker["livenessProbe"]["exec"]["command"]
    result = node.in_namespace(probe)
    assert result.returncode == 0, f"liveness probe {probe} failed: {result.stdout}{result.stderr}"

    # The broker gets its user only from the rendered definitions file (no password variable);
    # ping and pong log in with the credentials Secret's values.
    assert not any(e["name"].startswith("RABBITMQ_DEFAULT_") for e in node.broker["env"])
    ping = next(o for o in pod.objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-ping"))
    credentials_name = next(v["secret"]["secretName"] for v in ping["spec"]["template"]["spec"]["volumes"]
                            if v["name"] == "rabbitmq-credentials")
    credentials = _secret_data(_one(pod.objects, "Secret", credentials_name))
    broker = Broker(port=node.port, user=credentials["username"].decode(),
                    password=credentials["password"].decode())
    queue = f"pp.ro.{uuid.uuid4().hex[:8]}"
    queue_type = next(e["value"] for o in pod.objects if o["kind"] == "Deployment"
                      for e in o["spec"]["template"]["spec"]["containers"][0]["env"]
                      if e["name"] == "RABBITMQ_QUEUE_TYPE")
    loadgen = Loadgen(bins["pingpong-loadgen"], broker)
    fill = subprocess.run([str(bins["pingpong-loadgen"]), "fill", "--count", "20"],
                          env={**base_env(), **broker.env(queue), "RABBITMQ_QUEUE_TYPE": queue_type},
                          capture_output=True, text=True, timeout=120)
    assert fill.returncode == 0, f"publishing to the read-only node failed: {fill.stderr}"
    assert loadgen.depth(queue) == 20

    # A container restart: same volumes, a fresh namespace; the durable messages are kept.
    node.stop()
    node.start()
    assert loadgen.depth(queue) == 20
    print(f"\nread-only node {node.node}: writable {pod.writable_paths(node.broker)}; "
          f"what it wrote: {node.written()}")
    node.stop()
