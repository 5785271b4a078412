#!/bin/sh
# Installs the Debian 12 packages the VM tests (vm-tests/, `make vm-test`, `make demo`) need:
# a guest kernel, dracut with its network and crypt modules, cryptsetup, QEMU (SeaBIOS and
# OVMF), swtpm and a static busybox for the test root. Idempotent; run as root (or with sudo
# available). Runs apt only when something is missing. The first install takes ~2.5 min,
# mostly linux-image's postinst building a host initramfs that the tests do not use.
set -eu

PKGS="linux-image-amd64 dracut dracut-core dracut-network cryptsetup cryptsetup-bin \
swtpm swtpm-tools qemu-system-x86 qemu-utils busybox-static e2fsprogs ovmf"

missing_pkgs() {
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf ' %s' "$p"
    done
}

missing="$(missing_pkgs)"
if [ -z "$missing" ]; then
    echo "install-vm-deps: all packages present"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# Two passes: installing one package can remove another through a Breaks: (a backported
# qemu-utils breaks bookworm's qemu-system-common); the second pass puts back the
# bookworm version of whatever was removed.
for pass in 1 2; do
    missing="$(missing_pkgs)"
    [ -n "$missing" ] || break
    echo "install-vm-deps: installing (pass $pass):$missing"
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
done
missing="$(missing_pkgs)"
if [ -n "$missing" ]; then
    echo "install-vm-deps: still missing after install:$missing" >&2
    exit 1
fi
