"""The development environment around the chart: the multi-target Dockerfile, kind-config.yaml,
skaffold.yaml and the cluster scripts. None of them can run here (no container engine, no
cluster), so these checks make sure they parse and that everything they name exists."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from deploy_helpers import (
    CHART,
    ROOT,
    render_chart,
    validate_object,
    workspace_version,
)

IMAGES = {
    "operator": "ghcr.io/pingpong-operator/operator",
    "ping": "ghcr.io/pingpong-operator/ping",
    "pong": "ghcr.io/pingpong-operator/pong",
}
# Dockerfile target -> (crate directory, binary name).
BINARIES = {
    "operator": ("operator", "pingpong-operator"),
    "ping": ("services/ping", "ping"),
    "pong": ("services/pong", "pong"),
}
# Every shell file under scripts/ and deploy/ (and images/build.sh): executables (with a shebang) and sourced libraries.
SHELL_FILES = sorted(
    [str(p.relative_to(ROOT)) for d in ("scripts", "deploy") for p in (ROOT / d).rglob("*.sh")]
    + [str(p.relative_to(ROOT)) for p in (ROOT / "images").glob("*.sh")]
)
SCRIPTS = [f for f in SHELL_FILES if (ROOT / f).read_text().startswith("#!")]
LIBRARIES = [f for f in SHELL_FILES if f not in SCRIPTS]


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], with line continuations joined and the FROM
    lines' `${ARG}`s replaced by the defaults of the global ARGs (what a plain build uses)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    defaults: dict[str, str] = {}
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and current is None and "=" in args:
            name, _, value = args.strip().partition("=")
            defaults[name] = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], value)
        if instruction == "FROM":
            args = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], args)
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert match, f"cannot parse FROM {args}"
            current = [("FROM", match.group(1))]
            stages[match.group(2) or f"stage{len(stages)}"] = current
        elif current is not None:
            current.append((instruction, args.strip()))
    return stages


def _crate_bins(crate_dir: str) -> set[str]:
    with open(ROOT / crate_dir / "Cargo.toml", "rb") as fh:
        manifest = tomllib.load(fh)
    return {b["name"] for b in manifest.get("bin", [])} or {manifest["package"]["name"]}


def test_dockerfile_has_a_target_per_image() -> None:
    stages = _dockerfile_stages()
    assert set(BINARIES) <= set(stages)
    assert list(stages)[-1] == "operator", "a plain `docker build .` builds the operator"
    build_from = stages["build"][0][1]
    assert build_from.startswith("rust:") and build_from.endswith("-bookworm")
    assert "RUST_VERSION=1.95" in (ROOT / "Dockerfile").read_text(encoding="utf-8")
    build_steps = " ".join(args for ins, args in stages["build"] if ins == "RUN")
    assert "--mount=type=cache" in build_steps, "dependency builds must be cached"
    assert "--locked" in build_steps
    for ins, args in stages["build"]:
        if ins == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


@pytest.mark.parametrize("target", sorted(BINARIES))
def test_runtime_images_are_distroless_and_non_root(target: str) -> None:
    stages = _dockerfile_stages()
    chain = []
    name = target
    while name in stages:  # follow FROM <stage> to the base image
        chain.append(stages[name])
        name = stages[name][0][1]
    assert name == "gcr.io/distroless/cc-debian12:nonroot", f"{target} runs on {name}"
    steps = [step for stage in chain for step in stage[1:]]
    assert not [s for s in steps if s[0] == "RUN"], "no shell in the runtime image: no RUN"
    users = [args for ins, args in stages[target] if ins == "USER"]
    assert users and users[-1] == "65532:65532"
    crate_dir, binary = BINARIES[target]
    assert binary in _crate_bins(crate_dir), f"{crate_dir} has no [[bin]] {binary}"
    (entrypoint,) = [args for ins, args in stages[target] if ins == "ENTRYPOINT"]
    assert entrypoint == f'["/usr/local/bin/{binary}"]', "exec form, no shell"
    copies = [args for ins, args in stages[target] if ins == "COPY"]
    assert any(f"/out/{binary} /usr/local/bin/{binary}" in c for c in copies)
    build_steps = " ".join(args for ins, args in stages["build"] if ins == "RUN")
    assert f"target/release/{binary}" in build_steps


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"target/", ".venv/", ".local/", ".git/"} <= entries
    copied = {"Cargo.toml", "Cargo.lock", "operator", "services"}
    assert not {e.rstrip("/") for e in entries} & copied


def test_kind_config_serves_localhost_80() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    assert config["name"] == "pingpong"
    assert "cluster=${KIND_CLUSTER_NAME:-pingpong}" in (ROOT / "scripts/kind.sh").read_text()
    (control_plane,) = [n for n in config["nodes"] if n["role"] == "control-plane"]
    ports = {(m["containerPort"], m["hostPort"]) for m in control_plane["extraPortMappings"]}
    assert ports == {(80, 80), (443, 443)}
    patches = [yaml.safe_load(p) for p in control_plane["kubeadmConfigPatches"]]
    labels = [
        p["nodeRegistration"]["kubeletExtraArgs"]["node-labels"]
        for p in patches if p.get("kind") == "InitConfiguration"
    ]
    assert labels == ["ingress-ready=true"]


def _skaffold() -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == "skaffold/v4beta14"
    assert config["kind"] == "Config"
    return config


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"values.yaml has no key {dotted}"
        node = node[part]
    return node


def _schema_lookup(schema: dict[str, Any], dotted: str) -> None:
    """Fails unless values.schema.json declares the dotted key (set or not by default)."""
    node = schema
    for part in dotted.split("."):
        properties = node.get("properties", {})
        assert part in properties, f"values.schema.json has no key {dotted}"
        node = properties[part]


def _set(values: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def test_skaffold_builds_the_three_images() -> None:
    config = _skaffold()
    assert config["build"]["local"]["push"] is False
    stages = _dockerfile_stages()
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == set(IMAGES.values())
    for target, image in IMAGES.items():
        docker = artifacts[image]["docker"]
        assert (ROOT / artifacts[image].get("context", ".") / docker["dockerfile"]).is_file()
        assert docker["target"] == target and target in stages


def test_skaffold_deploys_the_chart_with_the_built_images() -> None:
    config = _skaffold()
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    assert release["namespace"] == "pingpong-system"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    sanitized = {re.sub(r"[/.\-]", "_", image): image for image in IMAGES.values()}
    values: dict[str, Any] = {}
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    for key, template in release["setValueTemplates"].items():
        _schema_lookup(schema, key)
        variables = re.findall(
            r"\{\{\s*\.(IMAGE_(?:FULLY_QUALIFIED|REPO_NO_DOMAIN|REPO|TAG|DIGEST|DOMAIN))"
            r"_(\w+)\s*\}\}",
            template,
        )
        assert variables, f"{key}: no skaffold image variable in {template}"
        for _, artifact in variables:
            assert artifact in sanitized, f"{key} names unknown artifact {artifact}"
        _set(values, key, "0123abcd" if key.endswith(".tag") else
             "ghcr.io/pingpong-operator/x" if key.endswith(".repository") else
             "ghcr.io/pingpong-operator/x:0123abcd")
    assert {"image.repository", "image.tag", "stackImages.ping", "stackImages.pong"} <= set(
        release["setValueTemplates"])
    for key, value in release.get("setValues", {}).items():
        _lookup(defaults, key)
        _set(values, key, value)
    # What skaffold would install must pass the values schema and the Kubernetes schemas.
    for obj in render_chart(values):
        validate_object(obj)


def _hook_commands(config: dict[str, Any]) -> list[str]:
    return [" ".join(h["host"]["command"]) for h in config["deploy"]["helm"]["hooks"]["after"]]


def _apply_patch(config: dict[str, Any], patch: dict[str, Any]) -> None:
    parts = [int(p) if p.isdigit() else p for p in patch["path"].strip("/").split("/")]
    node: Any = config
    for part in parts[:-1]:
        node = node[part]
    assert patch["op"] == "replace" and (
        parts[-1] in node if isinstance(node, dict) else parts[-1] < len(node)
    ), f"profile patch path {patch['path']} does not exist"
    node[parts[-1]] = patch["value"]


def test_skaffold_applies_the_samples_after_the_chart() -> None:
    config = _skaffold()
    (command,) = _hook_commands(config)
    assert "manifests/samples/minimal.yaml" in command
    assert (ROOT / "manifests/samples/minimal.yaml").is_file()
    (profile,) = [p for p in config["profiles"] if p["name"] == "gateway"]
    for patch in profile["patches"]:
        _apply_patch(config, patch)
    (command,) = _hook_commands(config)
    assert "manifests/samples/gateway.yaml" in command
    assert (ROOT / "manifests/samples/gateway.yaml").is_file()


def _stack_image_env(values: dict[str, Any] | None) -> dict[str, str]:
    (deployment,) = [o for o in render_chart(values) if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return {"operator": container["image"], "ping": env["PINGPONG_PING_IMAGE"],
            "pong": env["PINGPONG_PONG_IMAGE"]}


def test_image_names_are_consistent() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    version = workspace_version()
    assert defaults["image"]["repository"] == IMAGES["operator"]
    # The version is written once (Chart.yaml appVersion): ping and pong follow the operator image.
    assert defaults["image"]["tag"] == ""
    assert "ping" not in defaults["stackImages"] and "pong" not in defaults["stackImages"]
    assert defaults["stackImages"]["rabbitmq"] == "rabbitmq:4.2-management"
    assert _stack_image_env(None) == {name: f"{image}:{version}" for name, image in IMAGES.items()}
    moved = _stack_image_env({"image": {"repository": "registry.local:5000/pp/operator", "tag": "dev"}})
    assert moved == {name: f"registry.local:5000/pp/{name}:dev" for name in IMAGES}
    pinned = _stack_image_env({"stackImages": {"ping": "example.com/ping:1", "pong": "example.com/pong:2"}})
    assert (pinned["ping"], pinned["pong"]) == ("example.com/ping:1", "example.com/pong:2")
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for image in IMAGES.values():
        assert image in readme


def test_the_scripts_are_found() -> None:
    assert {"scripts/local.sh", "scripts/kind.sh", "scripts/generate.sh", "scripts/e2e.sh",
            "scripts/test.sh"} <= set(SCRIPTS)
    assert {"scripts/lib.sh", "deploy/local/common.sh"} <= set(LIBRARIES)


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_are_executable(script: str) -> None:
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("library", LIBRARIES)
def test_sourced_libraries_are_not_executable(library: str) -> None:
    path = ROOT / library
    assert not os.access(path, os.X_OK), f"{library} is sourced, not run: chmod -x"
    assert path.read_text().startswith("# shellcheck shell=bash\n")
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("script", SHELL_FILES)
def test_scripts_are_shellcheck_clean(script: str) -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is required in CI (apt-get install shellcheck)")
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", "-x", script], capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout


def test_local_and_kind_scripts_take_a_subcommand() -> None:
    for script, commands in {"local.sh": ("up", "down", "status"), "kind.sh": ("up", "down")}.items():
        text = (ROOT / "scripts" / script).read_text()
        for command in commands:
            assert re.search(rf"^  {command}\) {command} ;;$", text, re.MULTILINE), (script, command)
        result = subprocess.run([str(ROOT / "scripts" / script), "bogus"], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 2 and "usage:" in result.stderr, result.stderr


def test_kind_up_checks_every_tool() -> None:
    text = (ROOT / "scripts" / "kind.sh").read_text()
    for tool in ("docker", "kind", "kubectl", "skaffold", "helm"):
        assert re.search(rf"^\s*need {tool} \"https://", text, re.MULTILINE), f"no check for {tool}"
    assert "--load-images=true" in text
    assert "kind-config.yaml" in text
    assert "wait --for=condition=Ready" in text


def test_helm_python_matches_helm_v4() -> None:
    """The checks run Helm's own engine (the Helm v4 Go SDK behind helm-python)."""
    assert helm_python.helm_sdk_version().lstrip("v").startswith("4.")


def _e2e_child_kinds() -> set[str]:
    """CHILD_KINDS of tests/e2e/e2e_helpers.py: what the e2e suite lists, dumps and checks for GC."""
    tree = ast.parse((ROOT / "tests" / "e2e" / "e2e_helpers.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CHILD_KINDS":
            return set(ast.literal_eval(node.value).split(","))
    raise AssertionError("tests/e2e/e2e_helpers.py defines no CHILD_KINDS")


def _plural(kind: str) -> str:
    kind = kind.lower()
    if kind.endswith("y"):
        return kind[:-1] + "ies"
    return kind + ("es" if kind.endswith("s") else "s")


def test_e2e_checks_every_child_kind(operator_bin: Path) -> None:
    """The e2e suite's garbage-collection and drift checks cover every kind the operator creates."""
    checked = _e2e_child_kinds()
    rendered = subprocess.run(
        [str(operator_bin), "render", "-f", str(ROOT / "manifests/samples/full.yaml")],
        capture_output=True, text=True, check=True,
    ).stdout
    kinds = {_plural(doc["kind"]) for doc in yaml.safe_load_all(rendered) if doc}
    kinds -= {"servicemonitors", "httproutes"}  # checked by the tests that install their CRDs
    # The local control plane does not install the PrometheusRule CRD (not yet covered by e2e);
    # its builder is covered by operator/tests/operator/builders_alerts.rs and the golden.
    kinds -= {"prometheusrules"}
    assert kinds <= checked, f"tests/e2e CHILD_KINDS does not list {sorted(kinds - checked)}"
