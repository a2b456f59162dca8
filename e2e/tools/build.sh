#!/usr/bin/env bash
# Builds the Go tools the tests need from the pinned modules beside this script, once:
#
#   e2e/tools/build.sh TOOL...        build what is missing or stale; print each binary's path
#   e2e/tools/build.sh all            every tool
#   e2e/tools/build.sh --path TOOL... print the paths without building (exit 1 if one is not built)
#   e2e/tools/build.sh --list         the tools and their pinned versions
#
# TOOL: kube-apiserver, etcd, helm, kubeconform (which also brings openapi2jsonschema),
# prometheus3 (Prometheus 3's prometheus, the path printed, and promtool beside it, and its
# module's PromQL test scripts in promqltest/ beside them, which the PromQL test runner reads).
# A binary lands in $PROMSCALE_TOOLS_DIR/<tool>-<version>/ (default ~/.cache/promscale-rs/tools),
# with a stable link $PROMSCALE_TOOLS_DIR/bin/<tool> (prometheus3: bin/prometheus3 and
# bin/promtool3, apart from Debian's prometheus and promtool). A pin bump changes <version> and so
# rebuilds; any other change to the tool's go.mod, go.sum, Go files or build flags rebuilds in
# place (a .stamp file in the directory records their hash). Paths go to stdout, progress to
# stderr. Concurrent calls are safe (one flock per tool). Needs Go (GO=..., else `go` on PATH,
# else /usr/local/go/bin/go) and the Go module proxy on a cold machine; nothing when warm.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools_dir=${PROMSCALE_TOOLS_DIR:-$HOME/.cache/promscale-rs/tools}
all_tools=(kube-apiserver etcd helm kubeconform prometheus3)

building_in=""
trap '[ -z "$building_in" ] || rm -rf "$building_in"' EXIT

log() { echo "build.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# pinned VERSION of MODULE in DIR/go.mod (a require line, not a replace)
pinned() { awk -v m="$2" '$1 == m && $3 != "=>" { print $2; exit }' "$1/go.mod"; }

# tool_info TOOL: sets dir, module, version, pkgs (what `go build` builds), bins (names it
# writes, the first is the tool), links (their names in bin/, default bins), ldflags, tags
tool_info() {
  local t=$1
  dir=$here/$t
  ldflags="-s -w"
  tags=""
  links=()
  case "$t" in
    kube-apiserver)
      module=k8s.io/kubernetes
      pkgs=(k8s.io/kubernetes/cmd/kube-apiserver)
      bins=(kube-apiserver)
      ;;
    etcd)
      module=go.etcd.io/etcd/server/v3
      pkgs=(go.etcd.io/etcd/server/v3)
      bins=(etcd)
      ;;
    helm)
      module=helm.sh/helm/v3
      pkgs=(helm.sh/helm/v3/cmd/helm)
      bins=(helm)
      ;;
    kubeconform)
      module=github.com/yannh/kubeconform
      pkgs=(github.com/yannh/kubeconform/cmd/kubeconform ./openapi2jsonschema)
      bins=(kubeconform openapi2jsonschema)
      ;;
    prometheus3)
      module=github.com/prometheus/prometheus
      pkgs=(github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool)
      bins=(prometheus promtool)
      links=(prometheus3 promtool3)
      # only the static, file and http service discoveries (Prometheus' own build tag); not
      # builtinassets: the UI's compiled assets are not in the module (the HTTP API is all we use)
      tags=remove_all_sd
      ;;
    *) die "unknown tool '$t' (known: ${all_tools[*]})" ;;
  esac
  [ -f "$dir/go.mod" ] || die "$dir/go.mod missing"
  version=$(pinned "$dir" "$module")
  [ -n "$version" ] || die "no pin for $module in $dir/go.mod"
  case "$t" in
    kube-apiserver)
      # what Kubernetes' own build stamps; /version and --version report it
      local minor p
      minor=$(echo "$version" | cut -d. -f2)
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      done
      ;;
    etcd)
      ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$version"
      ;;
    helm)
      # as helm's Makefile: its version, and the Kubernetes version `helm template` and
      # `helm lint` assume (.Capabilities.KubeVersion), from the client-go it is built with
      local cg
      cg=$(pinned "$dir" k8s.io/client-go)
      [ -n "$cg" ] || die "no k8s.io/client-go in $dir/go.mod"
      local kmaj=$(( $(echo "${cg#v}" | cut -d. -f1) + 1 )) kmin
      kmin=$(echo "$cg" | cut -d. -f2)
      ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X $p.k8sVersionMajor=$kmaj -X $p.k8sVersionMinor=$kmin"
      done
      ;;
    kubeconform)
      ldflags+=" -X main.version=$version"
      ;;
    prometheus3)
      # as Prometheus' .promu.yml (no build date: it would change the stamp at every run);
      # module v0.3YY.Z is Prometheus 3.YY.Z
      local v=${version#v0.} p=github.com/prometheus/common/version
      v="${v:0:1}.$((10#$(echo "${v:1}" | cut -d. -f1))).$(echo "$v" | cut -d. -f2)"
      ldflags+=" -X $p.Version=$v -X $p.Revision=$version -X $p.Branch=v$v -X $p.BuildUser=promscale-rs"
      ;;
  esac
  [ "${#links[@]}" -gt 0 ] || links=("${bins[@]}")
  dest=$tools_dir/$t-$version
}

# hash of everything the build depends on besides the module cache
stamp_of() {
  {
    echo "recipe 1 | ${pkgs[*]} | ${bins[*]} | $ldflags${tags:+ | tags $tags}"
    (cd "$dir" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

up_to_date() { # needs tool_info
  local b
  for b in "${bins[@]}"; do [ -x "$dest/$b" ] || return 1; done
  [ "$(cat "$dest/.stamp" 2>/dev/null)" = "$(stamp_of)" ]
}

find_go() {
  if [ -n "${GO:-}" ]; then echo "$GO"
  elif command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "no Go toolchain (set GO=/path/to/go)"
  fi
}

link() { # the stable links in bin/, only when missing or pointing elsewhere (cheap, race-free)
  mkdir -p "$tools_dir/bin"
  local i b target
  for i in "${!bins[@]}"; do
    b=${links[i]}
    target="../$(basename "$dest")/${bins[i]}"
    [ "$(readlink "$tools_dir/bin/$b" 2>/dev/null)" != "$target" ] || continue
    ln -sfn "$target" "$tools_dir/bin/.$b.$$"
    mv -Tf "$tools_dir/bin/.$b.$$" "$tools_dir/bin/$b"
  done
}

# the test data some tools bring besides their binaries, once (not part of the stamp: a
# binary built before it was asked for keeps its build)
extras() {
  case "$1" in
    prometheus3)
      [ ! -d "$dest/promqltest" ] || return 0
      local go moddir
      go=$(find_go)
      moddir=$(cd "$dir" && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=readonly "$go" mod download -json "$module" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
      [ -d "$moddir/promql/promqltest/testdata" ] || die "no PromQL test scripts in $module $version ($moddir)"
      rm -rf "$dest/.promqltest.$$"
      cp -r "$moddir/promql/promqltest/testdata" "$dest/.promqltest.$$"
      chmod -R u+w "$dest/.promqltest.$$"
      mv -T "$dest/.promqltest.$$" "$dest/promqltest" 2>/dev/null || rm -rf "$dest/.promqltest.$$"
      ;;
  esac
}

ready() { # a built tool: its links, its extras, its path
  link
  extras "$1"
  echo "$dest/${bins[0]}"
}

build() {
  local t=$1
  tool_info "$t"
  if up_to_date; then ready "$t"; return; fi
  mkdir -p "$tools_dir"
  local lock_fd
  exec {lock_fd}>"$tools_dir/.$t.lock"
  flock "$lock_fd"
  if up_to_date; then # built by a concurrent call meanwhile
    exec {lock_fd}>&-
    ready "$t"; return
  fi
  local go tmp start=$SECONDS
  go=$(find_go)
  tmp=$(mktemp -d "$tools_dir/.build-$t.XXXXXX")
  building_in=$tmp
  chmod 755 "$tmp"
  log "building $t $version with $("$go" env GOVERSION) (cold: minutes for kube-apiserver and prometheus3) ..."
  # -mod=readonly: go.mod/go.sum are complete; a build never rewrites them.
  # GOTOOLCHAIN=local: the Go that is there, never a downloaded one. GOWORK=off: this module alone.
  local i
  for i in "${!pkgs[@]}"; do
    if ! (cd "$dir" && CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" \
        "$go" build -p 2 -trimpath ${tags:+-tags "$tags"} -ldflags="$ldflags" -o "$tmp/${bins[i]}" "${pkgs[i]}"); then
      rm -rf "$tmp"
      die "building $t failed"
    fi
  done
  stamp_of >"$tmp/.stamp"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  building_in=""
  exec {lock_fd}>&-
  log "built $t $version in $((SECONDS - start)) s: $dest"
  ready "$t"
}

[ $# -gt 0 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
mode=build
case "$1" in
  --path) mode=path; shift ;;
  --list) mode=list; shift ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
tools=("$@")
if [ "$mode" = list ] || [ "${#tools[@]}" -eq 0 ] || [ "${tools[0]}" = all ]; then tools=("${all_tools[@]}"); fi

rc=0
for t in "${tools[@]}"; do
  case "$mode" in
    build) build "$t" ;;
    list) tool_info "$t"; echo "$t $module $version $dest" ;;
    path)
      tool_info "$t"
      echo "$dest/${bins[0]}"
      up_to_date || { log "$t $version is not built (run e2e/tools/build.sh $t)"; rc=1; }
      ;;
  esac
done
exit $rc
