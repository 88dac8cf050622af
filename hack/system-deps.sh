#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use, when any is missing: openssl and
# prometheus (promtool); what hack/images.py builds and runs the images with (buildah and podman,
# runc as their OCI runtime, mmdebstrap for the Debian base root filesystem); and what the local
# cluster's real node needs: runc, the CNI plugins, iptables (kube-proxy), nftables (to remove the
# tables iptables creates), iproute2, gcc with a static C library (the pause image) and
# busybox-static (the test image's shell).
set -euo pipefail
packages=(openssl prometheus buildah podman runc mmdebstrap containernetworking-plugins iptables nftables iproute2 gcc
          libc6-dev busybox-static)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run (a parallel setup) instead of failing on its lock.
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
