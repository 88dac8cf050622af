#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use, when any is missing: openssl and
# prometheus (promtool), and what hack/images.py builds and runs the images with (buildah and
# podman, runc as their OCI runtime, mmdebstrap for the Debian base root filesystem).
set -euo pipefail
packages=(openssl prometheus buildah podman runc mmdebstrap)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run (a parallel setup) instead of failing on its lock.
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
