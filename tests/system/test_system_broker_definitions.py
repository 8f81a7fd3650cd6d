"""Broker credentials rotation carried out through the definitions file the operator renders,
proved with the real rabbitmq-server on a private node (never the shared broker).

`pingpong-operator render` prints what the controller applies; its ConfigMap's `rabbitmq.conf`
(the `definitions.*` lines verbatim; only the host-specific listener/plugin ports and the mount
path are replaced) and its `<stack>-rabbitmq-definitions` Secret start the node. Then, as the
controller would on a changed credentials Secret: re-render with the changed Secret (and the
previous definitions Secret, as observe reads them), restart the node on the same data
directory, and check over AMQP that the new password works and the old one is refused; that no
`guest` user ever exists; that a renamed user's old credentials stop working; and that the
broker's pod-template hash (and ping's, pong's) follows the Secret while the Secret's values
never appear outside Secrets.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from system_helpers import ROOT, Broker, PrivateBroker, base_env, binaries

CONTAINER_DEFINITIONS = "/etc/pingpong-rabbitmq-definitions/definitions.json"
STACK = """apiVersion: pingpong.dev/v1alpha1
kind: PingPongStack
metadata:
  name: rot
  namespace: sys
spec: {}
"""


def operator_binary() -> Path:
    bin_dir = Path(os.environ.get("PINGPONG_BIN_DIR", ROOT / "target" / "debug"))
    path = bin_dir / "pingpong-operator"
    if not os.access(path, os.X_OK):
        pytest.fail(f"missing {path}: build it with `cargo build -p pingpong-operator`", pytrace=False)
    return path


def render(*documents: str) -> list[dict[str, Any]]:
    """`pingpong-operator render -f -` of the stack followed by `documents` (observed Secrets)."""
    stream = "---\n".join([STACK, *documents])
    result = subprocess.run([str(operator_binary()), "render", "-f", "-"], input=stream,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def secret_yaml(name: str, data: dict[str, str]) -> str:
    """A Secret as `kubectl get secret -o yaml` prints it (values base64 in `data`)."""
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                           "type": "Opaque", "data": encoded})


def rollout_keys(docs: list[dict[str, Any]], kind: str, name: str) -> tuple[str, str]:
    """What rolls a workload: its configuration hash and its Secret digest."""
    obj = find(docs, kind, name)
    assert obj is not None, f"{kind}/{name} not rendered"
    annotations = obj["spec"]["template"]["metadata"]["annotations"]
    return annotations["pingpong.dev/config-hash"], annotations["pingpong.dev/secret-digest"]


class RenderedBroker(PrivateBroker):
    """A private node configured by the operator's rendered rabbitmq.conf and definitions."""

    def configure(self, docs: list[dict[str, Any]]) -> str:
        conf = find(docs, "ConfigMap", "rot-rabbitmq-config")
        assert conf is not None
        rendered = conf["data"]["rabbitmq.conf"]
        for line in ("definitions.import_backend = local_filesystem",
                     f"definitions.local.path = {CONTAINER_DEFINITIONS}",
                     "definitions.skip_if_unchanged = true"):
            assert line in rendered.splitlines(), f"{line!r} not rendered:\n{rendered}"
        # Host-specific: this node's listener, no plugins (so no management/prometheus ports),
        # the definitions file where this test keeps it. Everything else verbatim.
        host = []
        for line in rendered.splitlines():
            if line.startswith(("listeners.tcp.", "management.", "prometheus.")):
                continue
            host.append(line.replace(CONTAINER_DEFINITIONS, str(self.dir / "definitions.json")))
        host.append(f"listeners.tcp.1 = 127.0.0.1:{self.port}")
        (self.dir / "rabbitmq.conf").write_text("\n".join(host) + "\n")
        self.write_definitions(docs)
        return rendered

    def write_definitions(self, docs: list[dict[str, Any]]) -> dict[str, Any]:
        secret = find(docs, "Secret", "rot-rabbitmq-definitions")
        assert secret is not None, "the definitions Secret is rendered"
        raw = base64.b64decode(secret["data"]["definitions.json"])
        path = self.dir / "definitions.json"
        path.write_bytes(raw)
        os.chmod(path, 0o440)  # as the Secret volume mounts it
        if os.geteuid() == 0:
            user = pwd.getpwnam("rabbitmq")
            os.chown(path, 0, user.pw_gid)  # root:<fsGroup>
        return json.loads(raw)

    def restart(self) -> None:
        self.stop()
        self.start()
        result = self.ctl("await_startup", "--timeout", "120", timeout=150)
        assert result.returncode == 0, f"node did not boot: {result.stderr}\n{self.log_tail()}"

    def users(self) -> dict[str, str]:
        result = self.ctl("-q", "list_users", "--no-table-headers")
        assert result.returncode == 0, result.stderr
        users = {}
        for line in result.stdout.splitlines():
            name, _, tags = line.partition("\t")
            users[name.strip()] = tags.strip()
        return users


def amqp_login(bins: dict[str, Path], port: int, user: str, password: str) -> subprocess.CompletedProcess[str]:
    """Opens an AMQP connection as user/password (deleting a queue that does not exist)."""
    env = base_env()
    env.update(Broker(port=port, user=user, password=password).env("unused"))
    return subprocess.run([str(bins["pingpong-loadgen"]), "delete-queue",
                           f"pp-defs-{uuid.uuid4().hex[:8]}"],
                          capture_output=True, text=True, env=env, timeout=60)


def assert_login(bins: dict[str, Path], port: int, user: str, password: str, ok: bool) -> None:
    result = amqp_login(bins, port, user, password)
    if ok:
        assert result.returncode == 0, f"{user} refused: {result.stderr}"
    else:
        assert result.returncode != 0, f"{user} with an old password was let in"
        assert re.search(r"ACCESS_REFUSED|403|auth", result.stderr, re.I), result.stderr


@pytest.fixture
def node() -> Iterator[RenderedBroker]:
    broker = RenderedBroker()
    try:
        yield broker
    except BaseException:
        print(f"\n===== private broker log ({broker.log_path}) =====\n{broker.log_tail()}")
        raise
    finally:
        broker.destroy()


def test_a_changed_credentials_secret_updates_the_broker_user(node: RenderedBroker) -> None:
    bins = binaries()
    # First render: the operator generates the credentials (as for a new stack).
    first = render()
    generated = find(first, "Secret", "rot-rabbitmq-credentials")
    assert generated is not None
    user = base64.b64decode(generated["data"]["username"]).decode()
    password1 = base64.b64decode(generated["data"]["password"]).decode()
    node.configure(first)
    node.start()
    assert node.ctl("await_startup", "--timeout", "120", timeout=150).returncode == 0
    assert node.users() == {user: "[administrator]"}, "only the declared user; no guest"
    assert_login(bins, node.port, user, password1, ok=True)
    assert_login(bins, node.port, "guest", "guest", ok=False)

    # The next reconcile reads the Secrets it created: nothing rolls.
    observed1 = secret_yaml("rot-rabbitmq-credentials", {"username": user, "password": password1})
    cookie = find(first, "Secret", "rot-rabbitmq-erlang-cookie")
    assert cookie is not None
    observed_cookie = yaml.safe_dump(cookie)
    steady = render(observed1, observed_cookie)
    assert find(steady, "Secret", "rot-rabbitmq-credentials") is None, "an existing Secret is never written"
    for kind, name in [("StatefulSet", "rot-rabbitmq"), ("Deployment", "rot-ping"),
                       ("Deployment", "rot-pong")]:
        assert rollout_keys(steady, kind, name) == rollout_keys(first, kind, name), name

    # Rotation: only the Secret's password changes.
    password2 = f"rotated-{uuid.uuid4().hex}"
    observed2 = secret_yaml("rot-rabbitmq-credentials", {"username": user, "password": password2})
    definitions1 = find(steady, "Secret", "rot-rabbitmq-definitions")
    assert definitions1 is not None
    rotated = render(observed2, yaml.safe_dump(definitions1), observed_cookie)
    # The broker pods and ping/pong all roll in the same apply (their hashes follow the digest).
    for kind, name in [("StatefulSet", "rot-rabbitmq"), ("Deployment", "rot-ping"),
                       ("Deployment", "rot-pong")]:
        assert rollout_keys(rotated, kind, name) != rollout_keys(steady, kind, name), name
    for doc in rotated:
        if doc["kind"] != "Secret":
            assert password2 not in json.dumps(doc), f"{doc['kind']} carries the password"
    node.write_definitions(rotated)
    node.restart()
    assert_login(bins, node.port, user, password2, ok=True)
    assert_login(bins, node.port, user, password1, ok=False)
    assert node.users() == {user: "[administrator]"}

    # A restart without a change re-imports nothing and keeps the password.
    node.restart()
    assert_login(bins, node.port, user, password2, ok=True)

    # A new user name: the new user works; the old one is kept without password (refused).
    user3, password3 = f"renamed-{uuid.uuid4().hex[:6]}", f"third-{uuid.uuid4().hex}"
    observed3 = secret_yaml("rot-rabbitmq-credentials", {"username": user3, "password": password3})
    definitions2 = find(rotated, "Secret", "rot-rabbitmq-definitions")
    assert definitions2 is not None
    renamed = render(observed3, yaml.safe_dump(definitions2), observed_cookie)
    declared = node.write_definitions(renamed)
    assert [u["name"] for u in declared["users"]] == [user3, user]
    node.restart()
    assert_login(bins, node.port, user3, password3, ok=True)
    assert_login(bins, node.port, user, password2, ok=False)
    assert node.users() == {user3: "[administrator]", user: "[]"}
    assert "guest" not in node.users()
