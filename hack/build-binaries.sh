#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules and caches them outside the clone.
# The cache folder is keyed by the pinned Kubernetes module files (tools/kube, which also gives
# the real node's kubelet and kube-proxy) and the helm version, so a version bump builds afresh
# and a repeat run costs nothing. The other module folders under tools/ (prometheus-adapter,
# containerd, CoreDNS, the test image's probe) are built into the same folder, each keyed by its
# own files, so pinning another release of one rebuilds only that one. Prints the folder holding
# the binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mods="$here/tools/kube"
cache_root=${MEDUSA_CACHE:-$HOME/.cache/medusa-operator}
helm_version=v3.22.0
key=$(cat "$mods/go.mod" "$mods/go.sum" <(echo "helm $helm_version") | sha256sum | cut -c1-16)
bin="$cache_root/bin/$key"
kube_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok helm)
export GOFLAGS=-mod=readonly CGO_ENABLED=0
# Linked with -w (no DWARF), so the compiler need not write DWARF either: less compile work.
no_dwarf=all=-dwarf=false

# One module folder under tools/: its binaries as name=package, its build tags and link flags.
# A group's key covers every file of its folder (go.mod, go.sum and our own main packages) and
# its build settings.
module_version() { # go.mod module: the required version, in a require block or on its own line
  awk -v m="$2" '($1 == "require" && $2 == m) {print $3} ($1 == m) {print $2}' "$1" | head -n1
}
containerd_version=$(module_version "$here/tools/containerd/go.mod" github.com/containerd/containerd/v2)
[ -n "$containerd_version" ] || { echo "no containerd version in tools/containerd/go.mod" >&2; exit 1; }
group_names=(adapter containerd coredns probe)
group_tags=("" no_btrfs "" "")
group_ldflags=("" "-X github.com/containerd/containerd/v2/version.Version=$containerd_version" "" "")
group_bins=(
  "prometheus-adapter=sigs.k8s.io/prometheus-adapter/cmd/adapter"
  "containerd=github.com/containerd/containerd/v2/cmd/containerd containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 ctr=github.com/containerd/containerd/v2/cmd/ctr"
  "coredns=medusa.dev/tools/coredns"
  "probe=medusa.dev/tools/probe"
)

group_key() { # index
  local dir="$here/tools/${group_names[$1]}"
  { echo "${group_tags[$1]} ${group_ldflags[$1]}"
    cd "$dir" && for f in $(ls | LC_ALL=C sort); do echo "$f"; cat "$f"; done; } | sha256sum | cut -c1-16
}

group_done() { # folder index
  local spec
  for spec in ${group_bins[$2]}; do [ -x "$1/${spec%%=*}" ] || return 1; done
  [ "$(cat "$1/.${group_names[$2]}.key" 2>/dev/null)" = "$(group_key "$2")" ]
}

build_group() { # folder index
  group_done "$1" "$2" && return 0
  local spec name started
  for spec in ${group_bins[$2]}; do
    name=${spec%%=*}
    echo "building $name (tools/${group_names[$2]})" >&2
    started=$SECONDS
    (cd "$here/tools/${group_names[$2]}" && go build -trimpath -gcflags="$no_dwarf" -tags "${group_tags[$2]}" \
      -ldflags="-s -w ${group_ldflags[$2]}" -o "$1/$name.$$" "${spec#*=}") >&2
    mv -f "$1/$name.$$" "$1/$name"
    echo "built $name in $((SECONDS - started))s" >&2
  done
  group_key "$2" > "$1/.${group_names[$2]}.key"
}

kube_done() { # folder
  local t
  for t in "${kube_tools[@]}"; do [ -x "$1/$t" ] || return 1; done
}

all_done() { # folder
  kube_done "$1" || return 1
  local i
  for i in "${!group_names[@]}"; do group_done "$1" "$i" || return 1; done
}

if all_done "$bin"; then echo "$bin"; exit 0; fi
# Two callers asking at once share one build: the second waits for the first.
mkdir -p "$cache_root/bin"
exec 9>"$cache_root/bin/.$key.lock"
flock 9
if all_done "$bin"; then echo "$bin"; exit 0; fi
# A folder whose Kubernetes binaries are all there only lacks some other group: add it in place.
if kube_done "$bin"; then
  for i in "${!group_names[@]}"; do build_group "$bin" "$i"; done
  echo "$bin"
  exit 0
fi

mkdir -p "$bin.partial"
kube_version=$(module_version "$mods/go.mod" k8s.io/kubernetes)
minor=$(echo "$kube_version" | cut -d. -f2)
version_flags="-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
version_flags="$version_flags -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"
build() { # name package
  [ -x "$bin.partial/$1" ] && return 0
  echo "building $1 ($2)" >&2
  local started=$SECONDS
  (cd "$mods" && go build -trimpath -gcflags="$no_dwarf" -ldflags="-s -w $version_flags" -o "$bin.partial/$1" "$2") >&2
  echo "built $1 in $((SECONDS - started))s" >&2
}
build etcd go.etcd.io/etcd/server/v3
build kwok sigs.k8s.io/kwok/cmd/kwok
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kubectl k8s.io/kubernetes/cmd/kubectl
build kubelet k8s.io/kubernetes/cmd/kubelet
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy
if [ ! -x "$bin.partial/helm" ]; then
  echo "building helm $helm_version" >&2
  GOFLAGS= GOBIN="$bin.partial" go install -trimpath -gcflags="$no_dwarf" -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
fi
for i in "${!group_names[@]}"; do build_group "$bin.partial" "$i"; done
rm -rf "$bin"
mv "$bin.partial" "$bin"
echo "$bin"
