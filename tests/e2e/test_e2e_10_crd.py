"""The CRD as the API server sees it: field docs in `kubectl explain`, every sample accepted, every
bad sample rejected at admission with the message its schema or CEL rule gives, printer columns."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e_helpers import SAMPLES, Cluster, expected_error, load_docs, stack_doc

GOOD = sorted(SAMPLES.glob("*.yaml"))
BAD = sorted((SAMPLES / "bad").glob("*.yaml"))


def _without_namespace(path: Path) -> str:
    docs = load_docs(path)
    for doc in docs:
        doc.get("metadata", {}).pop("namespace", None)
    return yaml.safe_dump_all(docs)


def test_explain_shows_the_field_docs(cluster: Cluster) -> None:
    crd = load_docs(SAMPLES.parent / "crd.yaml")[0]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    out = cluster.kubectl("explain", "pingpongstack.spec").stdout
    for field in ("ping", "pong", "rabbitmq", "ingress", "paused"):
        assert field in out, f"`kubectl explain pingpongstack.spec` does not list {field}:\n{out}"
    first_words = " ".join(spec["properties"]["rabbitmq"]["description"].split()[:4])
    rabbitmq = cluster.kubectl("explain", "pingpongstack.spec.rabbitmq").stdout
    assert first_words in " ".join(rabbitmq.split()), rabbitmq


@pytest.mark.parametrize("path", GOOD, ids=[p.name for p in GOOD])
def test_every_sample_is_accepted(cluster: Cluster, ns: str, path: Path) -> None:
    result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-",
                             input=_without_namespace(path), check=False)
    assert result.returncode == 0, f"{path.name} was rejected: {result.stderr}"


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_every_bad_sample_is_rejected_with_its_message(cluster: Cluster, ns: str, path: Path) -> None:
    want = expected_error(path)
    result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-",
                             input=_without_namespace(path), check=False)
    assert result.returncode != 0, f"{path.name} was accepted by the API server"
    assert "is invalid" in result.stderr, result.stderr
    assert want in result.stderr, f"{path.name}: expected {want!r} in:\n{result.stderr}"


def test_get_shows_the_printer_columns(cluster: Cluster, ns: str) -> None:
    cluster.apply(stack_doc("columns", {"rabbitmq": {"storage": {"ephemeral": True}}}), ns)
    header = cluster.kubectl("get", "pps", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "PING", "PONG", "BROKER", "STORE", "ENDPOINT", "AGE"], header
