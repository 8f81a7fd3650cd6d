#!/usr/bin/env bash
# Build an observability tool from Go modules only (no Docker, no release downloads) and print its
# path on the last line of stdout:
#   scripts/observability/build.sh promtool   Prometheus's promtool (`promtool test rules`)
#   scripts/observability/build.sh jaeger     Jaeger v2 all-in-one (OTLP receiver, query API, UI)
#   scripts/observability/build.sh --cached TOOL   only print the cached binary (exit 1 if not built)
# Versions live in scripts/observability/versions.sh. Each is built once and cached outside git in
# $PINGPONG_TOOLS_CACHE (default ~/.cache/pingpong-operator/tools); a second run is instant.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/observability/versions.sh
source "$here/versions.sh"

say() { printf '  [tools build] %s\n' "$*" >&2; }
die() { printf 'tools build: %s\n' "$*" >&2; exit 1; }

cached_only=false
if [ "${1:-}" = --cached ]; then cached_only=true; shift; fi
tool=${1:-}
case $tool in
  # remove_all_sd: promtool without the cloud service-discovery plugins (`test rules` and `check
  # rules` never use them), which halves the cold build.
  promtool) module=github.com/prometheus/prometheus version=$PROMETHEUS_VERSION pkg=cmd/promtool tags=remove_all_sd ;;
  jaeger) module=github.com/jaegertracing/jaeger version=$JAEGER_VERSION pkg=cmd/jaeger tags= ;;
  *) die "usage: $0 promtool|jaeger" ;;
esac

cache=${PINGPONG_TOOLS_CACHE:-$HOME/.cache/pingpong-operator/tools}
out="$cache/bin/$tool-$version"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
$cached_only && exit 1

command -v go >/dev/null || die "Go is not installed: it builds $tool $version from Go modules (https://go.dev/dl, or your distribution's golang package)"
go env GOPROXY | grep -qv '^off$' || die "GOPROXY is off: the build needs the Go module proxy"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

# A throwaway module per tool, so the tools' requirements never meet (and replace directives in
# the tool's own go.mod, which `go install pkg@version` refuses, do not matter).
src="$cache/src/$tool-$version"
mkdir -p "$src" "$cache/bin"
[ -f "$src/go.mod" ] || (cd "$src" && go mod init "pingpong.local/tools/$tool" >/dev/null 2>&1)
say "$tool $version: resolving $module@$version (cold: several minutes on 2 cores)"
(cd "$src" && go get "$module@$version" >/dev/null 2>&1) ||
  die "could not get $module@$version from the Go module proxy"
say "$tool $version: go build"
(cd "$src" && go build -trimpath -tags "$tags" -ldflags "-s -w" -o "$out.tmp" "$module/$pkg") ||
  die "go build of $module/$pkg@$version failed (see above)"
mv "$out.tmp" "$out"
say "built $out"
echo "$out"
