#!/usr/bin/env bash
# Builds the container images of promscale-connector and promscale-operator from the release
# binaries, on a base assembled from Debian packages (libc6, libgcc-s1, ca-certificates,
# tzdata: what a distroless "cc" image holds; no shell, no package manager), with buildah,
# offline, into the project's own container storage:
#
#   images/build.sh BINARY_DIR      build what changed; print name, id and size of each image
#   images/build.sh --env           print the settings the tests use to run the images
#
# Images: ghcr.io/promscale-rs/promscale-{connector,operator}:<workspace version>, user
# 65532:65532, OCI annotations (version, revision, source, ...). Storage (vfs) and base layer
# live in $PROMSCALE_IMAGES_DIR (default ~/.cache/promscale-rs/images); an image is rebuilt
# only when its binary, the base or this script change. Needs root (or sudo) for buildah.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
dir=${PROMSCALE_IMAGES_DIR:-$HOME/.cache/promscale-rs/images}
registry=ghcr.io/promscale-rs
uid=65532
packages=(libc6 libgcc-s1 ca-certificates tzdata)

export CONTAINERS_CONF=$here/containers.conf
storage=(--root "$dir/storage" --runroot "$dir/run" --storage-driver vfs)

if [ "${1:-}" = "--env" ]; then
  echo "CONTAINERS_CONF=$CONTAINERS_CONF"
  echo "PROMSCALE_IMAGES_STORAGE=${storage[*]}"
  exit 0
fi
bin_dir=${1:?usage: images/build.sh BINARY_DIR | --env}
version=$(awk -F'"' '/^\[workspace.package\]/ {p=1} p && $1 ~ /^version/ {print $2; exit}' "$top/Cargo.toml")
revision=$(git -C "$top" rev-parse HEAD 2>/dev/null || echo unknown)
source=$(awk -F'"' '/^repository/ {print $2; exit}' "$top/Cargo.toml")
log() { echo "images: $*" >&2; }
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9

# --- the base: Debian packages, unpacked and trimmed
versions=$(for p in "${packages[@]}"; do printf '%s=%s\n' "$p" "$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')"; done)
base_key=$( (echo "$versions"; cat "${BASH_SOURCE[0]}") | sha256sum | cut -c1-16)
base=$dir/base-$base_key
if [ ! -d "$base/rootfs" ]; then
  log "assembling the base from Debian packages: $(echo $versions)"
  rm -rf "$base.tmp" && mkdir -p "$base.tmp/debs" "$base.tmp/rootfs"
  (cd "$base.tmp/debs" && apt-get download $versions >/dev/null 2>&1) || {
    apt-get update -qq && (cd "$base.tmp/debs" && apt-get download $versions >/dev/null)
  }
  for deb in "$base.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$base.tmp/rootfs"; done
  root=$base.tmp/rootfs
  # What a program never needs at run time: docs, man pages, locales, charset converters,
  # helper programs (none of which is a shell).
  rm -rf "$root"/usr/share/{doc,man,info,lintian,locale} "$root"/usr/lib/x86_64-linux-gnu/gconv \
    "$root"/usr/bin "$root"/usr/sbin "$root"/sbin "$root"/bin "$root"/usr/share/ca-certificates/*.conf
  # The CA bundle update-ca-certificates would write.
  mkdir -p "$root/etc/ssl/certs"
  cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' $uid $uid >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' $uid >"$root/etc/group"
  mkdir -p "$root/tmp" "$root/home/nonroot" && chmod 1777 "$root/tmp" && chown $uid:$uid "$root/home/nonroot"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
  rm -rf "$base.tmp/debs"
  mv "$base.tmp" "$base"
fi

build() { # build NAME: ghcr.io/promscale-rs/NAME:<version> from $bin_dir/NAME
  local name=$1 binary=$bin_dir/$1
  local image=$registry/$name:$version
  [ -x "$binary" ] || { log "$binary is missing: build the release binaries first (cargo build --release)"; exit 1; }
  local inputs
  inputs=$( (sha256sum "$binary" | cut -d' ' -f1; echo "$base_key $version $revision") | sha256sum | cut -c1-32)
  if [ "$(podman "${storage[@]}" image inspect --format '{{ index .Labels "dev.promscale.inputs" }}' "$image" 2>/dev/null)" = "$inputs" ]; then
    log "$image is up to date"
  else
    log "building $image"
    local c stripped
    # Line tables serve local backtraces; in the image they only cost megabytes.
    stripped=$(mktemp -d)/$name
    strip --strip-debug -o "$stripped" "$binary"
    c=$(buildah "${storage[@]}" from --quiet scratch)
    buildah "${storage[@]}" copy --quiet "$c" "$base/rootfs/" / >/dev/null
    buildah "${storage[@]}" copy --quiet --chmod 0755 "$c" "$stripped" "/usr/bin/$name" >/dev/null
    rm -rf "$(dirname "$stripped")"
    local annotations=(
      "org.opencontainers.image.title=$name"
      "org.opencontainers.image.version=$version"
      "org.opencontainers.image.revision=$revision"
      "org.opencontainers.image.source=$source"
      "org.opencontainers.image.licenses=Apache-2.0"
      "org.opencontainers.image.base.name=debian-12-packages:${base_key}"
    )
    local config=(--user "$uid:$uid" --workingdir /home/nonroot --entrypoint "[\"/usr/bin/$name\"]" --cmd ""
      --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --label "dev.promscale.inputs=$inputs")
    for a in "${annotations[@]}"; do config+=(--annotation "$a" --label "$a"); done
    buildah "${storage[@]}" config "${config[@]}" "$c"
    buildah "${storage[@]}" commit --quiet --format oci --rm "$c" "$image" >/dev/null
  fi
  printf '%s\t%s\t%s\n' "$image" \
    "$(podman "${storage[@]}" image inspect --format '{{.Id}}' "$image" | cut -c1-12)" \
    "$(podman "${storage[@]}" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}')"
}

build promscale-connector
build promscale-operator
