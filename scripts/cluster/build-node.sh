#!/usr/bin/env bash
# Build what the real node runs besides the kubelet (which build.sh builds with the control plane):
# containerd, its runc shim and ctr, CoreDNS and Traefik, from Go modules only, at the versions in
# scripts/cluster/versions.sh. Cached by version outside git in $PINGPONG_CLUSTER_CACHE (default
# ~/.cache/pingpong-operator/cluster); a second run is instant. Prints the directory on its last line.
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

build_traefik() {
  local d gomod lego m=github.com/traefik/traefik/v3
  d=$(module_dir "traefik-$TRAEFIK_VERSION")
  say "traefik $TRAEFIK_VERSION (cold: 10-20 min on 2 cores)"
  gomod=$(cd "$d" && go mod download -json "$m@$TRAEFIK_VERSION" | jq -r .GoMod)
  [ -f "$gomod" ] || die "could not download $m@$TRAEFIK_VERSION from the Go module proxy"
  (
    cd "$d"
    # A dependency's replace directives do not apply: copy Traefik's, except two this build
    # cannot use. (1) github.com/traefik/traefik/dynamic/ext points into Traefik's own repository,
    # which the module proxy does not serve: it is the open-source build's extension point, two
    # empty structs embedded in dynamic.HTTP and dynamic.Router, written here. (2) The fork
    # containous/go-http-auth of the basic/digest auth library is not served: the upstream
    # module it forks, github.com/abbot/go-http-auth v0.4.0, has the same API.
    go mod edit -json "$gomod" |
      jq -r '.Replace[] | select(.New.Version != null) | select(.Old.Path != "github.com/abbot/go-http-auth") | "\(.Old.Path)=\(.New.Path)@\(.New.Version)"' |
      while read -r r; do go mod edit -replace="$r"; done
    go mod edit -dropreplace=github.com/abbot/go-http-auth
    mkdir -p ext
    printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n' >ext/go.mod
    printf '// Package ext is the extension point of Traefik'"'"'s dynamic configuration (empty in open-source builds).\npackage ext\n\n// HTTP extends dynamic.HTTP.\ntype HTTP struct{}\n\n// Router extends dynamic.Router.\ntype Router struct{}\n' >ext/ext.go
    go mod edit -replace=github.com/traefik/traefik/dynamic/ext=./ext
    go mod edit -require="$m@$TRAEFIK_VERSION" -require=github.com/abbot/go-http-auth@v0.4.0
    # (3) lego's registry of ACME DNS-01 providers imports every provider; six of them need cloud
    # SDKs the module proxy does not serve (Akamai, Huawei Cloud, Oracle Cloud, Sakura Cloud,
    # UCloud, Yandex Cloud). Build with a copy of lego whose registry leaves those six out: this
    # Traefik cannot solve DNS-01 challenges at those providers, which a local cluster never does.
    lego=$(jq -r '.Require[] | select(.Path == "github.com/go-acme/lego/v5") | .Version' < <(go mod edit -json "$gomod"))
    if [ -n "$lego" ]; then
      rm -rf lego && cp -r "$(go mod download -json "github.com/go-acme/lego/v5@$lego" | jq -r .Dir)" lego && chmod -R u+w lego
      local p f=lego/providers/dns/zz_gen_dns_providers.go
      for p in edgedns huaweicloud oraclecloud sakuracloud ucloud yandexcloud; do
        sed -i -e "\\#\"github.com/go-acme/lego/v5/providers/dns/$p\"#d" \
          -e "/^\tcase .*:\$/{N;/\n\t\treturn $p\.NewDNSProvider()/d;}" "$f"
        ! grep -Eq "(^|[^a-z0-9])$p\.NewDNSProvider" "$f" || die "could not leave the DNS provider $p out of lego's registry"
      done
      go mod edit -replace="github.com/go-acme/lego/v5=./lego"
    fi
    go build -trimpath -ldflags "-s -w -X $m/pkg/version.Version=$TRAEFIK_VERSION" \
      -o "$bin.tmp/traefik" "$m/cmd/traefik"
  ) || die "go build of traefik $TRAEFIK_VERSION failed"
}

if [ ! -x "$bin.tmp/containerd" ] || [ ! -x "$bin.tmp/ctr" ]; then build_containerd; fi
[ -x "$bin.tmp/coredns" ] || build_coredns
[ -x "$bin.tmp/traefik" ] || build_traefik

rm -rf "$bin" && mv "$bin.tmp" "$bin"
have_all || die "build finished but binaries are missing in $bin"
say "built into $bin"
echo "$bin"
