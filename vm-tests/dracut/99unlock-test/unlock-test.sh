#!/bin/sh
# unlock-test capture|again: does its job only when the fw_cfg mode asks for it.
set -eu
trap 'exit 1' TERM

want="$1"
modprobe -q qemu_fw_cfg 2> /dev/null || :
entry=/sys/firmware/qemu_fw_cfg/by_name/opt/org.unlock-test/mode/raw
[ -r "$entry" ] || exit 0
mode="$(cat "$entry")"
[ "$mode" = "$want" ] || exit 0

case "$mode" in
    capture)
        mkdir -p /run/unlock-test
        /usr/bin/initrd-agent evidence --out /run/unlock-test/evidence.json
        # Straight to the console (journald forwards asynchronously and would lose the
        # tail at power-off); kernel messages must not interleave with the dump.
        echo 1 > /proc/sys/kernel/printk
        {
            echo "UNLOCK-TEST-EVIDENCE-BEGIN"
            base64 -w 64 /run/unlock-test/evidence.json | sed 's/^/UTEV:/'
            echo "UNLOCK-TEST-EVIDENCE-END"
        } > /dev/console
        sleep 1
        systemctl --no-block poweroff --force --force
        ;;
    again)
        echo "unlock-test: running initrd-agent a second time in this boot"
        /usr/bin/initrd-agent --verbose || echo "unlock-test: second run exit status $?"
        ;;
esac
