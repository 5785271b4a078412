#!/bin/sh
# Installs the Debian 12 packages the VM tests (vm-tests/, `make vm-test`, `make demo`) need:
# a guest kernel, dracut with its network and crypt modules, cryptsetup, QEMU (SeaBIOS and
# OVMF), swtpm, a static busybox for the test root, and for the UKI scenario systemd-stub
# (systemd-boot-efi), objcopy (binutils) and the FAT tools for its ESP (mtools, dosfstools). Idempotent; run as root (or with sudo
# available). Runs apt only when something is missing. The first install takes ~2.5 min,
# mostly linux-image's postinst building a host initramfs that the tests do not use.
set -eu

PKGS="linux-image-amd64 dracut dracut-core dracut-network cryptsetup cryptsetup-bin \
swtpm swtpm-tools qemu-system-x86 qemu-utils busybox-static e2fsprogs ovmf \
systemd-boot-efi binutils mtools dosfstools"

missing_pkgs() {
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf ' %s' "$p"
    done
}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# initramfs-tools (for the initramfs-tools scenarios) conflicts with dracut, so it is not
# installed: its packages are unpacked into a private tree that vm-tests overlays on /usr
# and /etc in a private mount namespace while it runs mkinitramfs (the host's / is never
# written). Overridable for the tests with VM_TEST_INITRAMFS_TOOLS.
IT_DIR="${VM_TEST_INITRAMFS_TOOLS:-/opt/unlock-vm-tests/initramfs-tools}"
IT_PKGS="initramfs-tools initramfs-tools-core cryptsetup-initramfs klibc-utils libklibc"

initramfs_tools_tree() {
    if [ -x "$IT_DIR/root/usr/sbin/mkinitramfs" ] && [ -f "$IT_DIR/packages" ]; then
        echo "install-vm-deps: initramfs-tools tree present ($IT_DIR)"
        return 0
    fi
    echo "install-vm-deps: unpacking $IT_PKGS into $IT_DIR"
    tmp="$(mktemp -d)"
    # apt-get download writes into the current directory (a private one: no _apt sandbox).
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    (cd "$tmp" && $SUDO apt-get download -qq -o APT::Sandbox::User=root $IT_PKGS)
    mkdir -p "$tmp/root"
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$tmp/root"
        # shellcheck disable=SC2016 # dpkg's format, not the shell's
        dpkg-deb --show --showformat '${Package} ${Version}\n' "$deb" >> "$tmp/packages"
    done
    # Merged /usr: the packages' /lib, /bin and /sbin are the host's /usr/lib, ...
    for d in lib bin sbin; do
        if [ -d "$tmp/root/$d" ] && [ ! -L "$tmp/root/$d" ]; then
            mkdir -p "$tmp/root/usr/$d"
            cp -a "$tmp/root/$d/." "$tmp/root/usr/$d/"
            rm -rf "${tmp:?}/root/$d"
        fi
    done
    $SUDO mkdir -p "$(dirname "$IT_DIR")"
    $SUDO rm -rf "$IT_DIR"
    $SUDO mkdir -p "$IT_DIR"
    $SUDO cp -a "$tmp/root" "$tmp/packages" "$IT_DIR/"
    rm -rf "$tmp"
    cat "$IT_DIR/packages"
}

missing="$(missing_pkgs)"
if [ -z "$missing" ]; then
    echo "install-vm-deps: all packages present"
    initramfs_tools_tree
    exit 0
fi

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
initramfs_tools_tree
