#!/bin/sh
# Builds an initramfs-tools initramfs on a host that has dracut installed (the two packages
# conflict), for vm-tests:
#
#   unshare --mount --propagation private build-initramfs.sh TREE STAGE KVER OUT
#
# TREE is the unpacked initramfs-tools packages (scripts/install-vm-deps.sh), STAGE holds
# what an administrator would have installed (STAGE/usr: the agent, our hook, boot scripts
# and keyscript; STAGE/etc: initramfs-tools' configuration, /etc/crypttab, the agent's
# config). In this private mount namespace, read-only overlays put STAGE and TREE over the
# host's /usr and /etc, so mkinitramfs and every hook run at the paths they were written
# for; the host's file system is never written and the mounts vanish with the process.
set -eu

tree="$1"
stage="$2"
kver="$3"
out="$4"

[ -x "$tree/root/usr/sbin/mkinitramfs" ] || {
    echo "build-initramfs: $tree/root/usr/sbin/mkinitramfs missing (scripts/install-vm-deps.sh)" >&2
    exit 1
}
# Only inside a mount namespace of our own: these mounts must not reach the host.
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "build-initramfs: run me under unshare --mount --propagation private" >&2
    exit 1
fi

mount -t overlay overlay -o "lowerdir=$stage/usr:$tree/root/usr:/usr" /usr
mount -t overlay overlay -o "lowerdir=$stage/etc:$tree/root/etc:/etc" /etc

mkinitramfs -o "$out" "$kver"
