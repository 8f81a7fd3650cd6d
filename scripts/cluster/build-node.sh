#!/usr/bin/env bash
# Build what the real node runs besides the kubelet (which build.sh builds with the control plane):
# containerd, its runc shim and ctr, CoreDNS and the Gateway (Traefik), from Go modules only, at the
# versions in scripts/cluster/versions.sh, plus the Gateway API CRDs Traefik watches beyond the
# ones build.sh keeps (GRPCRoute, BackendTLSPolicy). Cached by version outside git in
# $PINGPONG_CLUSTER_CACHE (default ~/.cache/pingpong-operator/cluster); a second run is instant,
# and a rebuild after the cache directory was lost hits Go's build cache (-trimpath keeps the
# source directory out of its keys). Prints the directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/cluster/versions.sh
source "$here/versions.sh"

cache=${PINGPONG_CLUSTER_CACHE:-$HOME/.cache/pingpong-operator/cluster}
bin="$cache/node-containerd-$CONTAINERD_VERSION-coredns-$COREDNS_VERSION-traefik-$TRAEFIK_VERSION"
say() { printf '  [node build] %s\n' "$*" >&2; }
die() { printf 'node build: %s\n' "$*" >&2; exit 1; }

want=(containerd containerd-shim-runc-v2 ctr coredns traefik)
have_all() {
  local t
  for t in "${want[@]}"; do [ -x "$bin/$t" ] || return 1; done
  [ -f "$bin/crds/grpcroutes.yaml" ] && [ -f "$bin/crds/backendtlspolicies.yaml" ]
}
if have_all; then echo "$bin"; exit 0; fi
command -v go >/dev/null || die "Go is not installed (see scripts/cluster/build.sh)"
command -v jq >/dev/null || die "jq is not installed (Debian: apt-get install jq)"
mkdir -p "$bin.tmp"
# A cache made before Traefik was added holds containerd and CoreDNS of the same versions: reuse
# them (hard links) instead of building them again.
old="$cache/node-containerd-$CONTAINERD_VERSION-coredns-$COREDNS_VERSION"
for t in containerd containerd-shim-runc-v2 ctr coredns; do
  if [ ! -x "$bin.tmp/$t" ] && [ -x "$old/$t" ]; then ln -f "$old/$t" "$bin.tmp/$t"; fi
done
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

# Traefik is built inside its own module (its go.mod's replace directives, e.g. its fork of
# go-http-auth, only apply there), from a writable copy of the module's source. Each version's
# go.mod must resolve entirely from the module proxy: v3.7.x does not (its fork
# github.com/containous/go-http-auth at the pseudo-version it pins and its nested module
# github.com/traefik/traefik/dynamic/ext are not served), v3.6.13 does.
build_traefik() {
  local d src m=github.com/traefik/traefik/v3
  d="$cache/src/traefik-$TRAEFIK_VERSION"
  say "traefik $TRAEFIK_VERSION (cold: about 30 min on 2 cores; see the README)"
  if [ ! -f "$d/go.mod" ]; then
    src=$(cd "$(module_dir modules)" && go mod download -json "$m@$TRAEFIK_VERSION" | jq -r .Dir)
    [ -f "$src/go.mod" ] || die "could not download $m@$TRAEFIK_VERSION from the Go module proxy"
    rm -rf "$d.tmp" && cp -r "$src" "$d.tmp" && chmod -R u+w "$d.tmp" && mv "$d.tmp" "$d"
  fi
  # The webui is embedded from webui/static, which the module ships without the built dashboard:
  # the dashboard stays off (the Gateway and its /ping need no UI).
  ( cd "$d" && go build -trimpath \
      -ldflags "-s -w -X $m/pkg/version.Version=$TRAEFIK_VERSION -X $m/pkg/version.BuildDate=module" \
      -o "$bin.tmp/traefik" ./cmd/traefik ) ||
    die "go build of traefik $TRAEFIK_VERSION failed"
}

# The Gateway API CRDs Traefik's provider watches that build.sh does not keep: its informers
# would never sync without them.
gateway_crds() {
  local gw r
  gw=$(cd "$(module_dir modules)" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | jq -r .Dir)
  mkdir -p "$bin.tmp/crds"
  for r in grpcroutes backendtlspolicies; do
    cp "$gw/config/crd/standard/gateway.networking.k8s.io_$r.yaml" "$bin.tmp/crds/$r.yaml" ||
      die "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION has no $r CRD"
  done
  chmod -R u+w "$bin.tmp/crds"
}

if [ ! -x "$bin.tmp/containerd" ] || [ ! -x "$bin.tmp/ctr" ]; then build_containerd; fi
[ -x "$bin.tmp/coredns" ] || build_coredns
[ -x "$bin.tmp/traefik" ] || build_traefik
gateway_crds

rm -rf "$bin" && mv "$bin.tmp" "$bin"
have_all || die "build finished but binaries are missing in $bin"
say "built into $bin"
echo "$bin"
