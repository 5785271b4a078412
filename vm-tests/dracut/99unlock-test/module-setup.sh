#!/bin/bash
# Test-only dracut module (vm-tests): hooks that the harness switches on per boot through a
# QEMU fw_cfg entry, which no firmware measures, so that a capture boot has the same PCRs
# as the boots it learns the policy for. Never part of a production initramfs.
#   opt/org.unlock-test/mode = capture   print `initrd-agent evidence` on the console, power off
#   opt/org.unlock-test/mode = again     run initrd-agent a second time after cryptsetup
#   opt/org.unlock-test/mode = later     after the agent: "type" the passphrase (fw_cfg entry
#                                        opt/org.unlock-test/passphrase) by writing it where
#                                        systemd-cryptsetup reads the key, and copy the agent
#                                        with its libraries to /run/unlock-test/later/, which
#                                        the root's init runs (code later in the same boot)

# dracut sets these before it sources this file.
# shellcheck disable=SC2154 # systemdsystemunitdir, initdir, moddir, SYSTEMCTL

check() {
    return 255
}

depends() {
    echo unlock
    return 0
}

installkernel() {
    hostonly='' instmods qemu_fw_cfg
}

install() {
    inst_multiple base64 modprobe cat cp sed mkdir
    inst_script "$moddir/unlock-test.sh" /usr/libexec/unlock-test
    inst_simple "$moddir/unlock-test-capture.service" "$systemdsystemunitdir/unlock-test-capture.service"
    inst_simple "$moddir/unlock-test-again.service" "$systemdsystemunitdir/unlock-test-again.service"
    inst_simple "$moddir/unlock-test-later.service" "$systemdsystemunitdir/unlock-test-later.service"
    $SYSTEMCTL -q --root "$initdir" add-wants cryptsetup.target unlock-test-capture.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target unlock-test-again.service
    $SYSTEMCTL -q --root "$initdir" add-wants cryptsetup.target unlock-test-later.service
}
