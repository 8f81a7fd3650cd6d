"""Which commit scripts/previous-release.sh names as the previous release (`--which`, no build),
on small repositories with a made-up history: the parent of the newest first-parent commit that
changed charts/, HEAD with uncommitted chart changes, the newest `v*` tag once one exists; a
shallow clone fetches the rest of its history from origin, or fails saying so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _commit(repo: Path, path: str, text: str, message: str) -> str:
    file = repo / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    _git(repo, "add", path)
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for script in ("previous-release.sh", "lib.sh"):
        shutil.copy2(ROOT / "scripts" / script, repo / "scripts" / script)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "test@example.invalid")
    _git(repo, "config", "user.name", "test")
    _git(repo, "add", "scripts")
    _git(repo, "commit", "-q", "-m", "scripts")
    return repo


def _which(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(repo / "scripts" / "previous-release.sh"), "--which"],
                          capture_output=True, text=True, timeout=60)


def test_the_parent_of_the_newest_chart_change_then_head_then_a_tag(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _commit(repo, "charts/pingpong-operator/values.yaml", "a: 1\n", "chart 1")
    before_chart_2 = _commit(repo, "operator/src/lib.rs", "// 1\n", "operator 1")
    _commit(repo, "charts/pingpong-operator/values.yaml", "a: 2\n", "chart 2")
    _commit(repo, "operator/src/lib.rs", "// 2\n", "operator 2")
    result = _which(repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == before_chart_2, result.stdout
    assert "newest commit that changed charts/" in result.stdout

    # A branch merged into main: the merge's first parent is main's state before it.
    _git(repo, "checkout", "-q", "-b", "topic")
    _commit(repo, "charts/pingpong-operator/values.yaml", "a: 3\n", "chart 3 on a branch")
    _git(repo, "checkout", "-q", "main")
    main_before_merge = _commit(repo, "operator/src/lib.rs", "// 3\n", "operator 3")
    _git(repo, "merge", "-q", "--no-ff", "-m", "merge topic", "topic")
    assert _which(repo).stdout.split()[0] == main_before_merge

    (repo / "charts" / "pingpong-operator" / "values.yaml").write_text("a: 4\n")
    result = _which(repo)
    assert result.stdout.split()[0] == _git(repo, "rev-parse", "HEAD"), result.stdout
    assert "uncommitted" in result.stdout
    _git(repo, "checkout", "-q", "--", "charts")

    tagged = _git(repo, "rev-parse", "HEAD~1")
    _git(repo, "tag", "v0.1.0", tagged)
    result = _which(repo)
    assert result.stdout.split()[0] == tagged and "v0.1.0" in result.stdout, result.stdout
    # HEAD tagged itself: the release before it.
    _git(repo, "tag", "v0.2.0", "HEAD")
    assert _which(repo).stdout.split()[0] == tagged


def test_a_shallow_clone_fetches_its_history_or_says_why_not(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _commit(repo, "charts/pingpong-operator/values.yaml", "a: 1\n", "chart 1")
    before_chart_2 = _commit(repo, "operator/src/lib.rs", "// 1\n", "operator 1")
    _commit(repo, "charts/pingpong-operator/values.yaml", "a: 2\n", "chart 2")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth=1", f"file://{repo}", str(shallow)], check=True)
    result = _which(shallow)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == before_chart_2, result.stdout
    assert _git(shallow, "rev-parse", "--is-shallow-repository") == "false"

    # Its origin gone: an error that says what is missing.
    orphan = tmp_path / "orphan"
    subprocess.run(["git", "clone", "-q", "--depth=1", f"file://{repo}", str(orphan)], check=True)
    shutil.rmtree(repo)
    result = _which(orphan)
    assert result.returncode != 0
    assert "shallow clone" in result.stderr, result.stderr


def test_no_parent_of_the_chart_change_is_an_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "charts").mkdir()
    for script in ("previous-release.sh", "lib.sh"):
        shutil.copy2(ROOT / "scripts" / script, repo / "scripts" / script)
    (repo / "charts" / "values.yaml").write_text("a: 1\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "test@example.invalid")
    _git(repo, "config", "user.name", "test")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "everything at once")
    result = _which(repo)
    assert result.returncode != 0
    assert "has no parent" in result.stderr, result.stderr
