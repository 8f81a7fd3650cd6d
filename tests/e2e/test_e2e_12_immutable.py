"""Every field that cannot change after creation is refused by the real API server, whether it was
set or left to its default (issue scenarios 5 and 8: `pong.store.postgres.provisioned.storage`
added after a stack was created with the default, and a renamed `rabbitmq.queue`).

The cases are generated from the installed CRD: every CEL transition rule (`oldSelf`) whose
message says the field "cannot be changed" / "cannot change" names its field path first; each leaf
under that path gets two values from its schema (a boolean is flipped, an enum takes its first and
last value, a quantity or a string two distinct values). For each leaf the suite creates a stack
that sets the leaf and one that leaves it to its default (both paused, so the operator creates no
children), then asks for a change with a server-side dry run and expects the rule's message. A new
immutable rule is covered without editing this file; only a field that needs another field set
first (the PostgreSQL storage needs `pong.store.type: postgres`) needs a line in `CONTEXT`."""

from __future__ import annotations

import copy
import re
from typing import Any, Iterator

import pytest
import yaml

from e2e_helpers import CHART, Cluster, load_docs, stack_doc

# Fields an immutable path needs set beside it to be valid at all (other CEL rules of the CRD).
CONTEXT: dict[str, dict[str, Any]] = {
    "pong.store.postgres": {"pong": {"store": {"type": "postgres"}}},
}
IMMUTABLE = re.compile(r"^([A-Za-z][A-Za-z.]*) .*cannot (?:be changed|change)")
# A rule that freezes a field only in some state ("pong.replicas cannot change while
# pong.autoscaling is set") is not immutability after creation: it is not generated here.
CONDITIONAL = re.compile(r"cannot (?:be changed|change) while ")


def _schema() -> dict[str, Any]:
    docs = load_docs(CHART / "crds" / "pingpongstacks.yaml")
    version = docs[0]["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _rules(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield from node.get("x-kubernetes-validations", [])
        for value in node.values():
            yield from _rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _rules(value)


def _node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        props = node.get("properties") or {}
        if part not in props:
            # oneOf alternatives keep their properties beside the oneOf
            raise KeyError(f"{path}: no property {part} in the schema")
        node = props[part]
    return node


def _leaves(path: str, node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if node.get("type") == "object" and node.get("properties"):
        for name, child in sorted(node["properties"].items()):
            yield from _leaves(f"{path}.{name}", child)
    else:
        yield path, node


def _values(path: str, node: dict[str, Any]) -> tuple[Any, Any]:
    """Two distinct values the schema accepts: (set at creation, changed to / set later)."""
    if node.get("type") == "boolean":
        return False, True
    if node.get("enum"):
        return node["enum"][0], node["enum"][-1]
    if node.get("x-kubernetes-int-or-string"):
        return "2Gi", "3Gi"
    if node.get("type") == "string":
        return "first", "second"
    raise AssertionError(f"{path}: no test values for schema {node}")


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(into)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _set(path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _context(path: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"paused": True}
    for prefix, extra in CONTEXT.items():
        if path.startswith(prefix):
            spec = _merge(spec, extra)
    return spec


def immutable_leaves() -> list[tuple[str, str]]:
    """(leaf path, the rule's message) for every leaf an immutability rule guards."""
    schema = _schema()
    out = []
    for rule in _rules(schema):
        match = IMMUTABLE.match(rule.get("message", ""))
        if "oldSelf" not in rule.get("rule", "") or not match or CONDITIONAL.search(rule["message"]):
            continue
        path = match.group(1)
        for leaf, _ in _leaves(path, _node(schema, path)):
            out.append((leaf, rule["message"]))
    return sorted(set(out))


def test_the_crd_guards_the_fields_the_issue_names() -> None:
    leaves = {leaf for leaf, _ in immutable_leaves()}
    for expected in ("pong.store.postgres.provisioned.storage.size", "rabbitmq.queue",
                     "rabbitmq.queueType", "rabbitmq.storage.size"):
        assert expected in leaves, f"{expected} is not guarded: {sorted(leaves)}"


def _dry_run(cluster: Cluster, ns: str, name: str, spec: dict[str, Any]) -> str:
    result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", check=False,
                             input=yaml.safe_dump(stack_doc(name, spec)))
    return "" if result.returncode == 0 else result.stderr


@pytest.mark.parametrize("leaf,message", immutable_leaves())
def test_an_immutable_field_is_refused_set_or_defaulted(cluster: Cluster, ns: str, leaf: str,
                                                         message: str) -> None:
    node = _leaves(leaf, _node(_schema(), leaf))
    first, second = _values(leaf, next(node)[1])
    base = _context(leaf)
    fragment = message.split(":", 1)[0][:60]
    cases = (
        ("set", _merge(base, _set(leaf, first)), _merge(base, _set(leaf, second))),
        ("defaulted", base, _merge(base, _set(leaf, second))),
    )
    for i, (how, created, changed) in enumerate(cases):
        name = f"imm-{i}"
        cluster.apply(stack_doc(name, created), ns)
        refused = _dry_run(cluster, ns, name, changed)
        assert fragment in refused, (
            f"{leaf} ({how}): the change {changed} was not refused with {fragment!r}: {refused or 'accepted'}")
        # Re-applying what exists stays accepted (the rule is not a blanket refusal).
        assert _dry_run(cluster, ns, name, created) == "", f"{leaf} ({how}): a no-op update was refused"
        cluster.kubectl("delete", "pps", "-n", ns, name, "--wait=true", "--timeout=60s")


def test_pong_replicas_are_frozen_only_while_autoscaling(cluster: Cluster, ns: str) -> None:
    """The one conditional rule left out above: `pong.replicas` cannot change while
    `pong.autoscaling` is set (the operator decides), and changes freely without it."""
    store = {"paused": True, "pong": {"store": {"type": "postgres"}}}
    autoscaled = _merge(store, {"pong": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}}})
    cluster.apply(stack_doc("imm-auto", autoscaled), ns)
    refused = _dry_run(cluster, ns, "imm-auto", _merge(autoscaled, {"pong": {"replicas": 2}}))
    assert "pong.replicas cannot change while pong.autoscaling is set" in refused, (
        f"a replicas change under autoscaling was not refused: {refused or 'accepted'}")
    cluster.apply(stack_doc("imm-manual", store), ns)
    assert _dry_run(cluster, ns, "imm-manual", _merge(store, {"pong": {"replicas": 2}})) == "", (
        "without autoscaling pong.replicas must be free to change")
    for name in ("imm-auto", "imm-manual"):
        cluster.kubectl("delete", "pps", "-n", ns, name, "--wait=true", "--timeout=60s")
