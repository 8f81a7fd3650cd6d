"""The release path (.github/workflows/): actionlint passes on every workflow, and the release
workflow publishes exactly what the chart, manifests/install.yaml and the README point at — the
three images of the multi-target Dockerfile for amd64 and arm64 under the registry the chart's
defaults name, the chart as an OCI artifact — and records the digests.

actionlint comes from PATH, or is installed once from the Go module proxy
(`go install github.com/rhysd/actionlint/cmd/actionlint@<ACTIONLINT_VERSION>`) into
~/.cache/pingpong-operator/tools/; under CI=true a missing actionlint is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_helpers import CHART, ROOT, workspace_version

ACTIONLINT_VERSION = "v1.7.12"
WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure)", pytrace=False)
    pytest.skip(reason)


def _actionlint() -> str:
    found = shutil.which("actionlint")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    bindir = cache / "pingpong-operator" / "tools" / f"actionlint-{ACTIONLINT_VERSION}"
    binary = bindir / "actionlint"
    if binary.is_file():
        return str(binary)
    go = shutil.which("go")
    if go is None:
        _missing("actionlint is not installed and there is no Go toolchain to install it "
                 f"(go install github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION})")
    bindir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(go), "install", f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}"],
        env=dict(os.environ, GOBIN=str(bindir)), capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 or not binary.is_file():
        _missing(f"installing actionlint {ACTIONLINT_VERSION} failed:\n{result.stderr[-2000:]}")
    return str(binary)


def test_workflows_pass_actionlint() -> None:
    workflows = sorted(WORKFLOWS.glob("*.y*ml"))
    assert RELEASE in workflows
    # actionlint also runs shellcheck on every `run:` block when shellcheck is installed.
    result = subprocess.run([_actionlint(), "-no-color", *map(str, workflows)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _release() -> dict[str, Any]:
    workflow = yaml.safe_load(RELEASE.read_text(encoding="utf-8"))
    assert isinstance(workflow, dict)
    return workflow


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def test_release_runs_on_version_tags_only() -> None:
    workflow = _release()
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push"}
    assert triggers["push"] == {"tags": ["v*.*.*"]}
    assert workflow["permissions"] == {"contents": "read"}, "least privilege by default"


def test_release_builds_the_three_images_for_amd64_and_arm64() -> None:
    jobs = _release()["jobs"]
    build = jobs["build"]
    platforms = {entry["platform"] for entry in build["strategy"]["matrix"]["include"]}
    assert platforms == {"linux/amd64", "linux/arm64"}
    pushes = [s for s in _steps(build) if str(s.get("uses", "")).startswith("docker/build-push-action@")]
    targets = {s["with"]["target"] for s in pushes}
    assert targets == {"operator", "ping", "pong"}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for step in pushes:
        target = step["with"]["target"]
        assert f" AS {target}\n" in dockerfile, f"Dockerfile has no stage {target}"
        assert step["with"]["platforms"] == "${{ matrix.platform }}"
        assert f"name=${{{{ env.IMAGE_PREFIX }}}}/{target}," in step["with"]["outputs"]
        assert "push-by-digest=true" in step["with"]["outputs"]
    assert any(str(s.get("uses", "")).startswith("docker/setup-buildx-action@") for s in _steps(build))


def test_release_pushes_to_the_registry_the_defaults_name() -> None:
    workflow = _release()
    prefix = workflow["env"]["IMAGE_PREFIX"]
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["image"]["repository"] == f"{prefix}/operator"
    install = (ROOT / "manifests" / "install.yaml").read_text(encoding="utf-8")
    version = workspace_version()
    for image in ("operator", "ping", "pong"):
        assert f"{prefix}/{image}:{version}" in install, f"install.yaml does not use {prefix}/{image}"
    assert workflow["env"]["CHART_REPO"] == f"oci://{prefix}/charts"
    publish = "\n".join(s.get("run", "") for s in _steps(workflow["jobs"]["publish"]))
    assert "docker buildx imagetools create" in publish
    assert 'helm push "dist/pingpong-operator-$VERSION.tgz" "$CHART_REPO"' in publish


def test_release_checks_the_version_and_records_digests() -> None:
    jobs = _release()["jobs"]
    check = "\n".join(s.get("run", "") for s in _steps(jobs["version"]))
    assert "Cargo.toml" in check and "Chart.yaml" in check and "exit 1" in check
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == chart["version"] == workspace_version(), (
        "a release tag must match the crate, the chart and its appVersion")
    publish = _steps(jobs["publish"])
    runs = "\n".join(s.get("run", "") for s in publish)
    assert "$GITHUB_STEP_SUMMARY" in runs
    assert "gh release" in runs and "dist/digests.md" in runs
    uploads = [s for s in publish if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and "dist/digests.md" in uploads[0]["with"]["path"]
