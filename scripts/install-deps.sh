#!/bin/sh
# Installs the Debian 12 packages the build and the tests need. Idempotent; run as root
# (or with sudo available). Skips apt entirely when everything is already present.
set -eu

# osslsigncode and linux-image-amd64: verifier-core's predict tests compare our Authenticode digest
# of the signed Debian kernel with osslsigncode's (scripts/install-vm-deps.sh needs the kernel too).
PKGS="swtpm swtpm-tools pkg-config clang shellcheck postgresql cryptsetup-bin openssl tang jose socat clevis osslsigncode linux-image-amd64 chromium"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "install-deps: installing:$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "install-deps: all packages present"
fi
