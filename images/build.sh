#!/usr/bin/env bash
# Build every image the real node of `make cluster` runs, here, from Debian packages and this
# repository, without pulling anything from a registry (buildah with --pull=never):
#
#   localhost/debian:bookworm-minbase   debootstrap --variant=minbase of Debian 12 (the base of all)
#   localhost/pause-catatonit:<ver>     the pod sandbox: Debian's static catatonit, run with -P
#   localhost/rabbitmq:<ver>            Debian's rabbitmq-server      (images/rabbitmq/Containerfile)
#   localhost/postgres:<ver>            Debian's postgresql-15        (images/postgres/Containerfile)
#   localhost/redis:<ver>               Debian's redis-server         (images/redis/Containerfile)
#   localhost/pingpong/{ping,pong,operator}:<crate version>
#                                       the project's Dockerfile targets, with BINARIES=prebuilt
#                                       (the release binaries built here by cargo, or the debug
#                                       ones with PINGPONG_IMAGE_PROFILE=debug as `make test`
#                                       does, which builds them anyway) and
#                                       RUNTIME_IMAGE=the Debian base above
#   localhost/coredns:<ver>             CoreDNS as scripts/cluster/build-node.sh built it, on scratch
#   localhost/traefik:v<ver>            Traefik as build-node.sh built it, on the Debian base
#                                       (images/traefik/Containerfile)
#
# Each service image is tagged with the version of the package it installed, read from the image.
# Images are cached by content outside git: buildah's store keeps the layers (an unchanged input
# rebuilds nothing), and ~/.cache/pingpong-operator/images keeps the Debian root filesystem and
# one docker-archive per image ID for `ctr images import`.
#
# Usage: images/build.sh NODE_BIN_DIR OUT_FILE
#   writes OUT_FILE with one line per image: NAME REFERENCE ARCHIVE
# Needs root (debootstrap, buildah) and the Debian packages buildah, debootstrap and catatonit.
set -euo pipefail
cd "$(dirname "$0")/.."
node_bin=${1:?usage: images/build.sh NODE_BIN_DIR OUT_FILE}
out=${2:?usage: images/build.sh NODE_BIN_DIR OUT_FILE}
cache=${PINGPONG_IMAGE_CACHE:-$HOME/.cache/pingpong-operator/images}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_ref=localhost/debian:$suite-minbase
say() { printf '  [images] %s\n' "$*" >&2; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "building images needs root (debootstrap, buildah): run as root or through sudo"
for tool in buildah debootstrap catatonit objcopy; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install buildah debootstrap catatonit binutils)"
done
mkdir -p "$cache/archives"
# One build at a time on this machine (make cluster, the e2e suite and CI may overlap): they share
# buildah's store, and bud below removes the containers that appear while it builds.
exec 9>"$cache/.build.lock"
flock 9
: >"$out.tmp"

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1"; }

# record NAME REF: export REF as a docker-archive named by its image ID (once) and list it.
record() {
  local id archive
  id=$(image_id "$2")
  archive="$cache/archives/$id.tar"
  if [ ! -s "$archive" ]; then
    rm -f "$archive.tmp"
    buildah push -q "$2" "docker-archive:$archive.tmp:$2" >/dev/null || die "could not export $2"
    mv "$archive.tmp" "$archive"
  fi
  printf '%s %s %s\n' "$1" "$2" "$archive" >>"$out.tmp"
}

# The Debian base: its root filesystem is cached as a tarball; the image is rebuilt from it when
# buildah's store lost it. Delete $cache/debian-*.tar to take newer packages.
base_tar="$cache/debian-$suite-minbase.tar"
if ! have_image "$base_ref"; then
  if [ ! -s "$base_tar" ]; then
    say "debootstrap --variant=minbase $suite from $mirror (cold: about 1-2 min)"
    root=$(mktemp -d "${TMPDIR:-/tmp}/pingpong-rootfs.XXXXXX")
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      { rm -rf "$root"; die "debootstrap failed; see $cache/debootstrap.log"; }
    # Daemons installed into images must not start at build time.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 0755 "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    tar -C "$root" --numeric-owner -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    rm -rf "$root"
  fi
  say "$base_ref from $base_tar"
  c=$(buildah from --pull=never scratch)
  buildah add "$c" "$base_tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash \
    --label org.opencontainers.image.description="Debian $suite minbase (debootstrap)" "$c"
  buildah commit -q --rm "$c" "$base_ref" >/dev/null
fi
record base "$base_ref"

# The pod sandbox ("pause") image: a static init that reaps children and waits for a signal.
catatonit_version=$(dpkg-query -W -f '${Version}' catatonit 2>/dev/null | sed 's/[-+].*//')
pause_ref=localhost/pause-catatonit:${catatonit_version:-unknown}
if ! have_image "$pause_ref"; then
  say "$pause_ref"
  c=$(buildah from --pull=never scratch)
  buildah copy "$c" "$(command -v catatonit)" /catatonit >/dev/null
  buildah config --entrypoint '["/catatonit", "-P"]' --user 65535:65535 "$c"
  buildah commit -q --rm "$c" "$pause_ref" >/dev/null
fi
record pause "$pause_ref"

# bud NAME CONTEXT FILE TARGET REF [BUILD-ARG...]: build with the layer cache, never pulling.
# buildah 1.28 (bookworm) leaves behind the working container it mounts for each
# `COPY --from=<stage>`: a full copy of that stage's image per build (about 0.7 GB for the
# binaries stage), which filled the disk after a few dozen builds. The containers that appear
# during the build are removed afterwards (builds are serialized by the lock above).
bud() {
  local name=$1 context=$2 file=$3 target=$4 ref=$5 args=() a before status=0
  shift 5
  for a in "$@"; do args+=(--build-arg "$a"); done
  [ -n "$target" ] && args+=(--target "$target")
  before=$(buildah containers -q --notruncate | sort)
  buildah bud -q --pull=never --network=host --layers --format=oci "${args[@]}" \
    -f "$file" -t "$ref" "$context" >"$cache/$name.build.log" 2>&1 || status=$?
  comm -13 <(printf '%s\n' "$before") <(buildah containers -q --notruncate | sort) |
    xargs -r buildah rm >/dev/null 2>&1 || say "could not remove the build's leftover containers"
  [ "$status" = 0 ] ||
    { tail -n 30 "$cache/$name.build.log" >&2; die "building $ref failed; see $cache/$name.build.log"; }
}

# package_version REF PACKAGE: the version of PACKAGE installed in image REF (upstream part),
# remembered by image ID.
package_version() {
  local memo c
  memo="$cache/versions/$(image_id "$1")-$2"
  if [ ! -s "$memo" ]; then
    mkdir -p "$cache/versions"
    c=$(buildah from --pull=never -q "$1")
    buildah run --network=none "$c" -- dpkg-query -W -f "\${Version}" "$2" |
      sed -e 's/^[0-9]*://' -e 's/[-+~].*//' >"$memo.tmp"
    buildah rm "$c" >/dev/null
    mv "$memo.tmp" "$memo"
  fi
  cat "$memo"
}

# service NAME PACKAGE: images/NAME/Containerfile on the Debian base, tagged with the version of
# PACKAGE it installed.
service() {
  local name=$1 package=$2 version building=localhost/pingpong-build/$1:latest
  say "$name (Debian package $package)"
  bud "$name" "images/$name" "images/$name/Containerfile" "" "$building" "BASE_IMAGE=$base_ref"
  version=$(package_version "$building" "$package")
  [ -n "$version" ] || die "could not read the version of $package in $building"
  buildah tag "$building" "localhost/$name:$version"
  record "$name" "localhost/$name:$version"
}
service rabbitmq rabbitmq-server
service postgres postgresql-15
service redis redis-server

# ping, pong and the operator: the Dockerfile's own runtime stages, fed with release binaries
# built on this machine (no Rust toolchain inside an image).
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
profile=${PINGPONG_IMAGE_PROFILE:-release}
case $profile in
  release)
    say "cargo build --release (ping, pong, operator)"
    cargo build -q --release --locked -p pingpong-operator --bin pingpong-operator \
      -p pingpong-ping --bin ping -p pingpong-pong --bin pong || die "cargo build --release failed"
    ;;
  debug)
    # What `make test` uses: the debug binaries it builds anyway (`cargo build --workspace --bins`).
    say "cargo build --workspace --bins (debug: ping, pong, operator)"
    cargo build -q --locked --workspace --bins || die "cargo build failed"
    ;;
  *) die "PINGPONG_IMAGE_PROFILE must be release or debug, not $profile" ;;
esac
context=$(mktemp -d "${TMPDIR:-/tmp}/pingpong-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/prebuilt"
# Without debug sections (symbols stay, so backtraces keep function names): the images, their
# archives and every node's containerd store each hold a copy.
for bin in ping pong pingpong-operator; do
  objcopy --strip-debug "$target_dir/$profile/$bin" "$context/prebuilt/$bin" ||
    die "could not copy $target_dir/$profile/$bin (objcopy --strip-debug)"
done
for target in ping pong operator; do
  say "localhost/pingpong/$target:$version (Dockerfile --target $target)"
  bud "$target" "$context" Dockerfile "$target" "localhost/pingpong/$target:$version" \
    BINARIES=prebuilt "RUNTIME_IMAGE=$base_ref"
  record "$target" "localhost/pingpong/$target:$version"
done

# CoreDNS runs as a pod: its static binary on an empty image.
# binary_image NAME VERSION ENTRYPOINT-JSON
binary_image() {
  local ref=localhost/$1:${2#v}
  if ! have_image "$ref"; then
    say "$ref"
    c=$(buildah from --pull=never scratch)
    buildah copy "$c" "$node_bin/$1" "/$1" >/dev/null
    buildah config --entrypoint "$3" --user 65532:65532 "$c"
    buildah commit -q --rm "$c" "$ref" >/dev/null
  fi
  record "$1" "$ref"
}
# shellcheck source=scripts/cluster/versions.sh
source scripts/cluster/versions.sh
binary_image coredns "$COREDNS_VERSION" '["/coredns"]'
# Traefik on the Debian base (images/traefik/Containerfile), tagged like the upstream image
# (v-prefixed); only the binary's layer is rebuilt when it changes.
[ -x "$node_bin/traefik" ] || die "no traefik binary in $node_bin (scripts/cluster/build-node.sh builds it)"
say "localhost/traefik:$TRAEFIK_VERSION"
mkdir -p "$context/traefik"
cp "$node_bin/traefik" "$context/traefik/traefik"
bud traefik "$context/traefik" images/traefik/Containerfile "" "localhost/traefik:$TRAEFIK_VERSION" \
  "BASE_IMAGE=$base_ref"
record traefik "localhost/traefik:$TRAEFIK_VERSION"

mv "$out.tmp" "$out"

# Archives of images no longer built (each rebuild of ping, pong or the operator adds one of a few
# hundred MB): delete those this list does not name, unless another build wrote them within the
# last hour (a second cluster being built beside this one).
find "$cache/archives" -maxdepth 1 -name '*.tar' -mmin +60 -print | while read -r archive; do
  grep -qF " $archive" "$out" || rm -f "$archive"
done
# Images no tag names any more (the previous build of ping, pong or the operator, and the stage
# that held the binaries): still under the lock, so no other build is using them.
buildah rmi --prune >/dev/null 2>&1 || say "warning: buildah rmi --prune failed (old images stay in its store)"
