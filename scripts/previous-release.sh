#!/usr/bin/env bash
# The previous release of this working tree, for the release-upgrade test
# (tests/e2e/test_e2e_55_release_upgrade.py): its operator binary, its chart and its CRD, cached
# outside git by commit. Prints the cache directory on the last line of stdout:
#   DIR/commit             the commit (40 hex digits)
#   DIR/why                how it was chosen (one line)
#   DIR/pingpong-operator  its operator binary (debug profile, as the suite's own)
#   DIR/chart/             its charts/pingpong-operator (crds/ included)
#   scripts/previous-release.sh --which   only print "COMMIT WHY" (no build)
# PINGPONG_PREVIOUS_RELEASE=<commit or tag> takes that one instead (an upgrade test from an older
# state, by hand).
#
# "Previous release", in this order:
#   1. the newest tag `v*` reachable from HEAD that does not point at HEAD itself (a tagged
#      release is what users upgrade from; none exists yet);
#   2. HEAD, when the working tree's charts/ differs from HEAD's (uncommitted chart changes);
#   3. otherwise the chart as it was before its newest change: L = the newest commit on HEAD's
#      first-parent line whose charts/ differs from its first parent's, previous = L^1. The chart
#      is what a user installs (its version is not bumped per change, so it cannot name a
#      release), and the operator binary of that commit is the one that chart ran.
# It needs git history: a shallow clone fetches the rest from origin, and when it cannot (or a
# commit is missing) that is an error that says so (the test fails under CI=true then).
#
# Cost: when the commit's operator sources (operator/, services/, Cargo.toml, Cargo.lock) equal
# the working tree's, its binary is this checkout's (copied, nothing extra is built). Otherwise
# the commit's operator is built in a copy of that commit's tree (`git archive`, in the cache,
# removed afterwards) with this checkout's CARGO_TARGET_DIR, so every dependency artefact is
# reused and only the operator crate is compiled, then this checkout's operator again (about a
# minute cold on 2 cores, nothing once cached). Why the second build: cargo names a workspace
# member's artefacts after its path relative to the workspace root, so the old tree's operator
# writes the very files of this checkout's (target/debug/deps/pingpong_operator-*, its
# fingerprint, and the binary target/debug/pingpong-operator), and with sources older than those
# files cargo could take them as this checkout's. So the script copies the old binary out, touches
# this checkout's operator/src/{lib,main}.rs (also when it stops half-way), builds this
# checkout's operator, and fails unless target/debug/pingpong-operator was written by that build.
# Cache: $PINGPONG_RELEASE_CACHE (default ~/.cache/pingpong-operator/releases).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cache=${PINGPONG_RELEASE_CACHE:-$HOME/.cache/pingpong-operator/releases}
log() { printf '  [previous release] %s\n' "$*" >&2; }

git rev-parse --git-dir >/dev/null 2>&1 || fail "$repo is not a git checkout: the previous release is a commit of its history"
if [[ $(git rev-parse --is-shallow-repository) == true ]]; then
  # A shallow clone of a repository at hand (a local path) can fetch the rest of its history.
  log "shallow clone: fetching the rest of the history from origin"
  git fetch --quiet --unshallow origin 2>/dev/null ||
    fail "this is a shallow clone and origin cannot give the rest of its history: the previous release is a commit of the history it lacks (git fetch --unshallow)"
fi

previous_release() { # prints "COMMIT WHY"
  local tag here l
  if [[ -n ${PINGPONG_PREVIOUS_RELEASE:-} ]]; then
    l=$(git rev-parse -q --verify "$PINGPONG_PREVIOUS_RELEASE^{commit}") ||
      fail "PINGPONG_PREVIOUS_RELEASE=$PINGPONG_PREVIOUS_RELEASE is not a commit of this clone"
    echo "$l PINGPONG_PREVIOUS_RELEASE=$PINGPONG_PREVIOUS_RELEASE"
    return
  fi
  here=$(git rev-parse HEAD)
  local exclude=()
  while read -r tag; do [[ -n $tag ]] && exclude+=(--exclude "$tag"); done < <(git tag --points-at HEAD)
  if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' "${exclude[@]}" HEAD 2>/dev/null); then
    echo "$(git rev-parse "$tag^{commit}") the newest release tag $tag"
    return
  fi
  if ! git diff --quiet HEAD -- charts/; then
    echo "$here HEAD (the working tree's charts/ has uncommitted changes)"
    return
  fi
  l=$(git log --first-parent -n1 --format=%H HEAD -- charts/)
  [[ -n $l ]] || fail "no commit of HEAD's history changed charts/: no previous release to upgrade from"
  git rev-parse -q --verify "$l^1^{commit}" >/dev/null ||
    fail "commit $l (the newest chart change) has no parent in this clone: the previous release is missing"
  echo "$(git rev-parse "$l^1") the parent of $(git rev-parse --short "$l"), the newest commit that changed charts/ ($(git log -n1 --format=%s "$l"))"
}

choice=$(previous_release)
commit=${choice%% *} why=${choice#* }
if [[ ${1:-} == --which ]]; then
  echo "$choice"
  exit 0
fi

out="$cache/$commit"
if [[ -x $out/pingpong-operator && -f $out/chart/Chart.yaml && -f $out/why ]]; then
  log "$commit: cached in $out"
  echo "$out"
  exit 0
fi

have cargo || fail "cargo is not installed: it builds the previous release's operator"
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-XXXXXX")
rebuilt=false
touch_own() { touch "$repo/operator/src/lib.rs" "$repo/operator/src/main.rs"; }
# Whatever happens from here on, this checkout's operator is never taken for fresh with the old
# tree's artefacts (see above).
trap '$rebuilt || touch_own; rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/out"
git archive --format=tar "$commit" | tar -x -C "$work/src"
own="$CARGO_TARGET_DIR/debug/pingpong-operator"

if git diff --quiet "$commit" -- operator services Cargo.toml Cargo.lock; then
  # The operator's sources (its crate, the workspace crates it uses, the manifests and the lock)
  # are this working tree's: its binary is the one this checkout builds.
  log "$commit ($why): the operator's sources equal this working tree's; taking this checkout's binary"
  why="$why; its operator's sources equal this working tree's"
  rebuilt=true
  cargo build -q -p pingpong-operator --bin pingpong-operator ||
    fail "cargo build of this checkout's operator failed"
  cp "$own" "$work/out/pingpong-operator"
else
  log "$commit ($why): building its operator with CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
  (cd "$work/src" && nice -n 10 cargo build --locked -q -p pingpong-operator --bin pingpong-operator) ||
    fail "cargo build of the previous release's operator ($commit) failed (see above)"
  cp "$own" "$work/out/pingpong-operator"

  log "building this checkout's operator again (cargo build -p pingpong-operator)"
  # The binary must be written by this build: newer than the marker (a hard link to the old
  # tree's artefact would keep its older time).
  touch "$work/marker"
  touch_own
  cargo build -q -p pingpong-operator --bin pingpong-operator ||
    fail "cargo build of this checkout's operator failed after building the previous release"
  [[ $own -nt $work/marker ]] ||
    fail "$own was not rebuilt from this checkout after building the previous release: remove it and run cargo build"
  rebuilt=true
fi

cp -r "$work/src/charts/pingpong-operator" "$work/out/chart"
echo "$commit" >"$work/out/commit"
echo "$why" >"$work/out/why"
rm -rf "$out"
mv "$work/out" "$out"
log "$commit: cached in $out"
echo "$out"
