"""An operator upgrade with a new default image, on a real API server: stacks with
`upgradePolicy: Manual` (the default) keep their images and pods and show the newer default in
`status.images` and `UpgradeAvailable`; `Automatic` stacks roll to it; an image named in the spec
is never touched.

The upgrade here is simulated within this working tree: the test restarts the host operator with
another `PINGPONG_RABBITMQ_IMAGE` (what the chart value `stackImages.rabbitmq` sets), as a release
with a new default broker image would, and restarts it with the original setting afterwards. The
real upgrade from the previous release (its CRD, chart and operator binary, then this tree's) is
test_e2e_55_release_upgrade.py; this one adds a `Manual` stack switched to `Automatic`. Pods
"restart" = a new pod uid or a changed pod template. Local mode only: the operator runs on the
host. A second scenario: a RabbitMQ version skip on a running stack is refused.

A change of RabbitMQ series (4.2 → 4.3 here) first asks the running broker for its feature flags
and deprecated features; kwok's pods have no broker behind them, so it waits with
`RabbitMQUpgradeRefused` until the annotation `pingpong.dev/rabbitmq-upgrade` names the image (the
user checked the broker). The answer of a real broker: test_e2e_63_rabbitmq_series.py."""

from __future__ import annotations

from typing import Any

from e2e_helpers import Cluster, eventually, stack_doc

NEW_DEFAULT = "rabbitmq:4.3-management"
# Lets a broker image through without asking the running broker (README, Day-2).
RABBITMQ_UPGRADE = "pingpong.dev/rabbitmq-upgrade"


def _restart_operator(cluster: Cluster, env: dict[str, str]) -> None:
    op = cluster.host_operator("operator")
    op.stop()
    cluster.operator_script("start", op.name, str(op.port), env=env)
    eventually("the operator is ready", op.ready, timeout=90)


def _pods(cluster: Cluster, ns: str, stack: str) -> dict[str, str]:
    """Pod name → uid of every pod of `stack`."""
    items = cluster.get("pods", namespace=ns, selector=f"app.kubernetes.io/instance={stack}")["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in items}


def _broker_template(cluster: Cluster, ns: str, stack: str) -> dict[str, Any]:
    return cluster.get("statefulset", f"{stack}-rabbitmq", ns)["spec"]["template"]


def _images(cluster: Cluster, ns: str, stack: str) -> dict[str, Any]:
    return (cluster.stack(ns, stack).get("status") or {}).get("images") or {}


def _condition(cluster: Cluster, ns: str, stack: str, ctype: str) -> tuple[str, str] | None:
    cond = cluster.condition(ns, stack, ctype)
    return (cond["status"], cond["reason"]) if cond else None


def _held_unread(cluster: Cluster, ns: str, stack: str, running: str) -> None:
    """`stack`'s change of RabbitMQ series waits: its broker could not be asked (kwok's pods have
    no broker behind them), so the StatefulSet keeps `running` and `Degraded` says why."""
    def held() -> dict[str, Any] | None:
        cond = cluster.condition(ns, stack, "Degraded")
        return cond if (cond and cond["status"] == "True" and cond["reason"] == "RabbitMQUpgradeRefused"
                        and "could not be read" in cond["message"]) else None
    cond = eventually(f"{stack}'s change of series held for the broker's answer", held, timeout=120)
    assert f"{RABBITMQ_UPGRADE}=" in cond["message"], cond
    assert _broker_template(cluster, ns, stack)["spec"]["containers"][0]["image"] == running


def test_an_operator_upgrade_rolls_only_the_stacks_whose_policy_allows_it(local: Cluster, ns: str) -> None:
    cluster = local
    ephemeral = {"rabbitmq": {"storage": {"ephemeral": True}}}
    stacks = {
        "manual": ephemeral,
        "auto": {**ephemeral, "upgradePolicy": "Automatic"},
        "chosen": {"upgradePolicy": "Automatic",
                   "rabbitmq": {"storage": {"ephemeral": True}, "image": "rabbitmq:4.1-management"}},
    }
    for name, spec in stacks.items():
        cluster.apply(stack_doc(name, spec), ns)
    for name in stacks:
        cluster.wait_ready(ns, name)
    eventually("every stack recorded its images",
               lambda: all(_images(cluster, ns, n).get("rabbitmq") for n in stacks))
    old_default = _images(cluster, ns, "manual")["rabbitmq"]["image"]
    assert old_default != NEW_DEFAULT
    assert _images(cluster, ns, "manual")["rabbitmq"]["source"] == "OperatorDefault"
    assert _images(cluster, ns, "chosen")["rabbitmq"] == {"image": "rabbitmq:4.1-management",
                                                        "source": "Spec"}
    assert cluster.stack(ns, "manual")["spec"]["upgradePolicy"] == "Manual"
    before = {n: (_pods(cluster, ns, n), _broker_template(cluster, ns, n)) for n in stacks}

    try:
        _restart_operator(cluster, {"PINGPONG_RABBITMQ_IMAGE": NEW_DEFAULT})

        # Manual: the newer default is shown, nothing rolls.
        eventually("manual shows the new default as available",
                   lambda: _images(cluster, ns, "manual")["rabbitmq"].get("available") == NEW_DEFAULT)
        assert _condition(cluster, ns, "manual", "UpgradeAvailable") == ("True", "NewerDefaultImage")
        assert _images(cluster, ns, "manual")["rabbitmq"]["image"] == old_default

        # Automatic: a new series (4.2 → 4.3) waits for the running broker's word on its feature
        # flags, which kwok's pods (no broker behind them) never give: the broker keeps its image
        # and the condition says why. The user, having checked the broker, lets it through.
        _held_unread(cluster, ns, "auto", old_default)
        cluster.kubectl("annotate", "pps", "auto", "-n", ns, f"{RABBITMQ_UPGRADE}={NEW_DEFAULT}")

        # Then it rolls to the new default, is Ready again, and nothing is left "available".
        def auto_rolled() -> bool:
            containers = _broker_template(cluster, ns, "auto")["spec"]["containers"]
            return containers[0]["image"] == NEW_DEFAULT
        eventually("auto's broker runs the new default", auto_rolled, timeout=120)
        eventually("auto recorded the new default",
                   lambda: _images(cluster, ns, "auto")["rabbitmq"] == {"image": NEW_DEFAULT,
                                                                        "source": "OperatorDefault"},
                   timeout=120)
        cluster.wait_ready(ns, "auto")
        cluster.wait_condition(ns, "auto", "Upgrading", "False", "NoUpgradeInProgress", timeout=120)
        cluster.wait_condition(ns, "auto", "UpgradeAvailable", "False", "ImagesCurrent")
        eventually("auto's broker pod was replaced",
                   lambda: _pods(cluster, ns, "auto").get("auto-rabbitmq-0")
                   not in (None, before["auto"][0].get("auto-rabbitmq-0")), timeout=120)

        # The image the spec names is the user's: unchanged, nothing available.
        cluster.wait_condition(ns, "chosen", "UpgradeAvailable", "False", "ImagesCurrent")

        # After all that settled, neither the Manual stack nor the spec'd one restarted anything.
        for name in ("manual", "chosen"):
            pods, template = before[name]
            assert _broker_template(cluster, ns, name) == template, name
            assert _pods(cluster, ns, name) == pods, name
        # The Manual stack takes the new default once its policy says so (and the broker step is
        # let through, as above).
        cluster.kubectl("annotate", "pps", "manual", "-n", ns, f"{RABBITMQ_UPGRADE}={NEW_DEFAULT}")
        cluster.kubectl("patch", "pps", "manual", "-n", ns, "--type=merge",
                        "-p", '{"spec":{"upgradePolicy":"Automatic"}}')
        eventually("manual rolls once Automatic",
                   lambda: _broker_template(cluster, ns, "manual")["spec"]["containers"][0]["image"]
                   == NEW_DEFAULT, timeout=120)
    finally:
        _restart_operator(cluster, {})


def test_a_rabbitmq_version_skip_is_refused_and_the_next_series_applied(cluster: Cluster, ns: str) -> None:
    """A running broker moves only by a step RabbitMQ supports (README, Day-2 "Upgrading
    RabbitMQ"): 4.0 → 4.2 skips 4.1 and is refused (the StatefulSet keeps 4.0, `Degraded`
    `RabbitMQUpgradeRefused` naming 4.1, every other child applied: ping's replicas change in the
    same edit); 4.1 is applied."""
    spec = {"rabbitmq": {"storage": {"ephemeral": True}, "image": "rabbitmq:4.0-management"}}
    cluster.apply(stack_doc("skip", spec), ns)
    cluster.wait_ready(ns, "skip")
    eventually("skip recorded its broker image",
               lambda: _images(cluster, ns, "skip").get("rabbitmq", {}).get("image")
               == "rabbitmq:4.0-management")
    template = _broker_template(cluster, ns, "skip")

    cluster.kubectl("patch", "pps", "skip", "-n", ns, "--type=merge", "-p",
                    '{"spec":{"rabbitmq":{"image":"rabbitmq:4.2-management"},"ping":{"replicas":2}}}')
    refused = cluster.wait_condition(ns, "skip", "Degraded", "True", "RabbitMQUpgradeRefused")
    assert "skips 4.1" in refused["message"], refused
    eventually("ping's new replicas are applied",
               lambda: cluster.get("deployment", "skip-ping", ns)["spec"]["replicas"] == 2)
    assert _broker_template(cluster, ns, "skip") == template

    cluster.kubectl("patch", "pps", "skip", "-n", ns, "--type=merge", "-p",
                    '{"spec":{"rabbitmq":{"image":"rabbitmq:4.1-management"}}}')
    # The supported step asks the running broker first (none answers on kwok's pods).
    _held_unread(cluster, ns, "skip", "rabbitmq:4.0-management")
    cluster.kubectl("annotate", "pps", "skip", "-n", ns, f"{RABBITMQ_UPGRADE}=rabbitmq:4.1-management")
    eventually("the broker runs 4.1",
               lambda: _broker_template(cluster, ns, "skip")["spec"]["containers"][0]["image"]
               == "rabbitmq:4.1-management")
    cluster.wait_condition(ns, "skip", "Degraded", "False")
    cluster.wait_ready(ns, "skip")
