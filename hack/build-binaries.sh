#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules and caches them outside the clone.
# The cache folder is keyed by the pinned module files, so a version bump builds afresh and a
# repeat run costs nothing. prometheus-adapter (tools/adapter) is built into the same folder and
# keyed by its own module files, so pinning another release rebuilds only the adapter. Prints the
# folder holding the binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mods="$here/tools/kube"
adapter_mods="$here/tools/adapter"
cache_root=${MEDUSA_CACHE:-$HOME/.cache/medusa-operator}
helm_version=v3.22.0
key=$(cat "$mods/go.mod" "$mods/go.sum" <(echo "helm $helm_version") | sha256sum | cut -c1-16)
bin="$cache_root/bin/$key"
adapter_key=$(cat "$adapter_mods/go.mod" "$adapter_mods/go.sum" | sha256sum | cut -c1-16)
tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm prometheus-adapter)

build_adapter() { # folder
  [ -x "$1/prometheus-adapter" ] && [ "$(cat "$1/.prometheus-adapter.key" 2>/dev/null)" = "$adapter_key" ] && return 0
  echo "building prometheus-adapter" >&2
  (cd "$adapter_mods" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' \
    -o "$1/prometheus-adapter.$$" sigs.k8s.io/prometheus-adapter/cmd/adapter) >&2
  mv -f "$1/prometheus-adapter.$$" "$1/prometheus-adapter"
  echo "$adapter_key" > "$1/.prometheus-adapter.key"
}

mkdir -p "$cache_root/bin"
exec 9>"$cache_root/bin/.lock"
flock 9  # one builder at a time (tests, the demo and make may all ask at once); the others reuse its result
complete=1
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || complete=0; done
if [ "$complete" = 1 ] && [ "$(cat "$bin/.prometheus-adapter.key" 2>/dev/null)" = "$adapter_key" ]; then echo "$bin"; exit 0; fi
# A folder whose Kubernetes binaries are all there only lacks the adapter: add it in place.
kube_complete=1
for t in "${tools[@]}"; do [ "$t" = prometheus-adapter ] || [ -x "$bin/$t" ] || kube_complete=0; done
if [ "$kube_complete" = 1 ]; then build_adapter "$bin"; echo "$bin"; exit 0; fi

mkdir -p "$bin.partial"
export GOFLAGS=-mod=readonly CGO_ENABLED=0
kube_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$mods/go.mod")
minor=$(echo "$kube_version" | cut -d. -f2)
version_flags="-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
version_flags="$version_flags -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"
build() { # name package
  [ -x "$bin.partial/$1" ] && return 0
  echo "building $1 ($2)" >&2
  (cd "$mods" && go build -trimpath -ldflags="-s -w $version_flags" -o "$bin.partial/$1" "$2") >&2
}
build etcd go.etcd.io/etcd/server/v3
build kwok sigs.k8s.io/kwok/cmd/kwok
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kubectl k8s.io/kubernetes/cmd/kubectl
if [ ! -x "$bin.partial/helm" ]; then
  echo "building helm $helm_version" >&2
  GOFLAGS= GOBIN="$bin.partial" go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
fi
build_adapter "$bin.partial"
rm -rf "$bin"
mv "$bin.partial" "$bin"
echo "$bin"
