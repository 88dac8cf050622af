#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use, when any is missing.
# The real node of the local cluster needs runc, the CNI plugins, iptables (kube-proxy), nftables
# (to remove the tables iptables creates), iproute2, gcc with a static C library (the pause
# image) and busybox-static (the test image's shell).
set -euo pipefail
packages=(openssl prometheus runc containernetworking-plugins iptables nftables iproute2 gcc libc6-dev busybox-static)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
