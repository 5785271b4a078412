#!/bin/bash
# Test-only dracut module (vm-tests): hooks that the harness switches on per boot through a
# QEMU fw_cfg entry, which no firmware measures, so that a capture boot has the same PCRs
# as the boots it learns the policy for. Never part of a production initramfs.
#   opt/org.unlock-test/mode = capture   print `initrd-agent evidence` on the console, power off
#   opt/org.unlock-test/mode = again     run initrd-agent a second time after cryptsetup

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
    inst_multiple base64 modprobe cat
    inst_script "$moddir/unlock-test.sh" /usr/libexec/unlock-test
    inst_simple "$moddir/unlock-test-capture.service" "$systemdsystemunitdir/unlock-test-capture.service"
    inst_simple "$moddir/unlock-test-again.service" "$systemdsystemunitdir/unlock-test-again.service"
    $SYSTEMCTL -q --root "$initdir" add-wants cryptsetup.target unlock-test-capture.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target unlock-test-again.service
}
