"""checkov (a third-party scanner, issue 12) over what users deploy: the operator's `render` of
every sample in manifests/samples, the chart rendered with its default values and with each
charts/pingpong-operator/ci/*.yaml, and manifests/install.yaml.

The checked-in tests/deploy/checkov.yaml lists the checks skipped as policy choices, each with
its reason. The scan with that file must find nothing; the scan without the skip list must fail
exactly the skipped checks, so a skip that no longer fails anywhere is removed rather than left
to hide a future finding. checkov runs from its own venv (.venv-checkov, scripts/venv.sh).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_helpers import MANIFESTS, ROOT, SAMPLES, ci_values_files, render_chart

CONFIG = Path(__file__).resolve().parent / "checkov.yaml"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
NAMESPACE = "pingpong"


def _checkov_bin() -> Path:
    if not os.access(CHECKOV, os.X_OK):
        message = f"{CHECKOV} is missing: run scripts/venv.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: a missing prerequisite is a failure)", pytrace=False)
        pytest.skip(message)
    return CHECKOV


def _write(path: Path, objects: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, operator_bin: Path) -> Path:
    out = tmp_path_factory.mktemp("checkov")
    samples = sorted(SAMPLES.glob("*.yaml"))
    assert samples, f"no samples in {SAMPLES}"
    for sample in samples:
        result = subprocess.run([str(operator_bin), "render", "-f", str(sample),
                                 "--namespace", NAMESPACE],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"render {sample.name}: {result.stderr}"
        (out / f"sample-{sample.name}").write_text(result.stdout, encoding="utf-8")
    _write(out / "chart-default.yaml", render_chart(None))
    for values in ci_values_files():
        _write(out / f"chart-{values.name}", render_chart(yaml.safe_load(values.read_text())))
    (out / "install.yaml").write_text((MANIFESTS / "install.yaml").read_text(), encoding="utf-8")
    return out


def _scan(directory: Path, config: Path | None) -> dict[str, Any]:
    args = [str(_checkov_bin()), "-d", str(directory), "--framework", "kubernetes",
            "--skip-download", "-o", "json"]
    if config is not None:
        args += ["--config-file", str(config)]
    # No platform look-ups (guidelines, policy downloads): the scan is offline and repeatable.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode in (0, 1), f"checkov failed to run ({result.returncode}):\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    (report,) = [r for r in reports if r["check_type"] == "kubernetes"]
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    assert report["summary"]["resource_count"] > 50, report["summary"]
    return report


def _failures(report: dict[str, Any]) -> list[str]:
    return [f"{c['check_id']} {c['check_name']}: {c['file_path']} {c['resource']}"
            for c in report["results"]["failed_checks"]]


def _skip_list() -> dict[str, str]:
    """The skipped check ids of checkov.yaml with the comment block written above each."""
    skips: dict[str, str] = {}
    comment: list[str] = []
    in_list = False
    for line in CONFIG.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not line.startswith(" "):
            in_list = stripped == "skip-check:"
            comment = []
            continue
        if in_list and stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
        elif in_list and (match := re.fullmatch(r"-\s*(CKV2?_[A-Z0-9_]+)", stripped)):
            skips[match.group(1)] = " ".join(comment)
            comment = []
    listed = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["skip-check"]
    assert sorted(skips) == sorted(listed), "every skip-check entry must be a plain check id line"
    return skips


def test_every_skip_has_a_reason() -> None:
    for check, reason in _skip_list().items():
        assert len(reason) >= 40, f"{check} in {CONFIG.name} has no written reason above it"


def test_rendered_manifests_pass_checkov_with_the_skip_list(rendered: Path) -> None:
    report = _scan(rendered, CONFIG)
    summary = report["summary"]
    print(f"\ncheckov {summary['checkov_version']}: {summary['passed']} passed, "
          f"{summary['failed']} failed over {summary['resource_count']} resources")
    failures = _failures(report)
    assert not failures, (
        "checkov found new problems; fix them, or, if one is a policy choice, add its id to "
        f"{CONFIG.relative_to(ROOT)} with the reason:\n" + "\n".join(failures))


def test_skip_list_has_no_stale_entries(rendered: Path) -> None:
    report = _scan(rendered, None)
    failed = Counter(c["check_id"] for c in report["results"]["failed_checks"])
    print(f"\nwithout the skip list: {report['summary']['passed']} passed, "
          f"{report['summary']['failed']} failed: {dict(sorted(failed.items()))}")
    skips = set(_skip_list())
    assert not skips - set(failed), (
        f"skipped in {CONFIG.name} but failing nowhere any more (remove them): {sorted(skips - set(failed))}")
    assert set(failed) <= skips  # the other test names them


def test_the_scan_covers_every_sample_and_values_file(rendered: Path) -> None:
    names = {p.name for p in rendered.iterdir()}
    assert {f"sample-{p.name}" for p in SAMPLES.glob("*.yaml")} <= names
    assert {f"chart-{p.name}" for p in ci_values_files()} <= names
    assert {"chart-default.yaml", "install.yaml"} <= names
