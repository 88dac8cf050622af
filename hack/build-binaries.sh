#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules and caches them outside the clone.
# The cache folder is keyed by the pinned module files, so a version bump builds afresh and a
# repeat run costs nothing. Prints the folder holding the binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mods="$here/tools/kube"
cache_root=${MEDUSA_CACHE:-$HOME/.cache/medusa-operator}
helm_version=v3.22.0
key=$(cat "$mods/go.mod" "$mods/go.sum" <(echo "helm $helm_version") | sha256sum | cut -c1-16)
bin="$cache_root/bin/$key"
tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)

complete=1
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$bin"; exit 0; fi

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
rm -rf "$bin"
mv "$bin.partial" "$bin"
echo "$bin"
