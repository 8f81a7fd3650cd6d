#!/usr/bin/env bash
# Build what the real node runs besides the kubelet (which build.sh builds with the control plane):
# containerd, its runc shim and ctr, and CoreDNS, from Go modules only, at the versions in
# scripts/cluster/versions.sh. Cached by version outside git in $PINGPONG_CLUSTER_CACHE (default
# ~/.cache/pingpong-operator/cluster); a second run is instant. Prints the directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/cluster/versions.sh
source "$here/versions.sh"

cache=${PINGPONG_CLUSTER_CACHE:-$HOME/.cache/pingpong-operator/cluster}
bin="$cache/node-containerd-$CONTAINERD_VERSION-coredns-$COREDNS_VERSION"
# No Gateway implementation is built: Traefik v3.7.13 (TRAEFIK_VERSION) needs modules the Go
# module proxy here does not serve (its fork github.com/containous/go-http-auth, whose API the
# upstream github.com/abbot/go-http-auth lacks, and six cloud SDKs of lego's DNS providers); see
# the README ("The real node").
say() { printf '  [node build] %s\n' "$*" >&2; }
die() { printf 'node build: %s\n' "$*" >&2; exit 1; }

want=(containerd containerd-shim-runc-v2 ctr coredns)
have_all() {
  local t
  for t in "${want[@]}"; do [ -x "$bin/$t" ] || return 1; done
}
if have_all; then echo "$bin"; exit 0; fi
command -v go >/dev/null || die "Go is not installed (see scripts/cluster/build.sh)"
command -v jq >/dev/null || die "jq is not installed (Debian: apt-get install jq)"
mkdir -p "$bin.tmp"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

module_dir() {
  local d="$cache/src/$1"
  mkdir -p "$d"
  [ -f "$d/go.mod" ] || (cd "$d" && go mod init "pingpong.local/build/$1" >/dev/null 2>&1)
  echo "$d"
}

build_containerd() {
  local d v=${CONTAINERD_VERSION#v} m=github.com/containerd/containerd/v2
  d=$(module_dir "containerd-$CONTAINERD_VERSION")
  say "containerd $CONTAINERD_VERSION (cold: several minutes)"
  # Without cgo the btrfs snapshotter drops out by itself; overlayfs is what the node uses.
  ( cd "$d" && go get "$m@$CONTAINERD_VERSION" >/dev/null 2>&1 &&
    go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X $m/version.Version=$v -X $m/version.Revision=module" \
      -o "$bin.tmp/" "$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr" ) ||
    die "go build of containerd $CONTAINERD_VERSION failed"
}

build_coredns() {
  local d
  d=$(module_dir "coredns-$COREDNS_VERSION")
  say "coredns $COREDNS_VERSION"
  ( cd "$d" && go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null 2>&1 &&
    go build -trimpath -ldflags "-s -w" -o "$bin.tmp/coredns" github.com/coredns/coredns ) ||
    die "go build of coredns $COREDNS_VERSION failed"
}


if [ ! -x "$bin.tmp/containerd" ] || [ ! -x "$bin.tmp/ctr" ]; then build_containerd; fi
[ -x "$bin.tmp/coredns" ] || build_coredns

rm -rf "$bin" && mv "$bin.tmp" "$bin"
have_all || die "build finished but binaries are missing in $bin"
say "built into $bin"
echo "$bin"
