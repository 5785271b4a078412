#!/bin/sh
# unlock-test capture|again|later: does its job only when the fw_cfg mode asks for it.
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
    later)
        # The passphrase fallback: what a person types at the prompt, written where
        # systemd-cryptsetup reads the volume's key (headless=true: no prompt in tests).
        uuid=""
        read -r cmdline < /proc/cmdline
        for arg in $cmdline; do
            case "$arg" in
                rd.luks.uuid=*) uuid="${arg#rd.luks.uuid=}" ;;
            esac
        done
        mkdir -p /run/cryptsetup-keys.d
        cat /sys/firmware/qemu_fw_cfg/by_name/opt/org.unlock-test/passphrase/raw \
            > "/run/cryptsetup-keys.d/luks-$uuid.key"
        echo "unlock-test: passphrase fallback for luks-$uuid"

        # Code running later in this boot: the agent and its config in /run, which survives
        # switch-root (with its libraries, the dynamic loader's list plus the TCTI that
        # tss2-tctildr dlopen()s, when the agent is a dynamic one; the static agent runs
        # as it is). The root's init runs run.sh.
        d=/run/unlock-test/later
        mkdir -p "$d/lib"
        cp /usr/bin/initrd-agent "$d/"
        loader=""
        if /lib64/ld-linux-x86-64.so.2 --list /usr/bin/initrd-agent > /dev/null 2>&1; then
            for lib in $(/lib64/ld-linux-x86-64.so.2 --list /usr/bin/initrd-agent \
                | sed -n 's/.*[[:space:]]\(\/[^[:space:]]*\)[[:space:]](0x.*/\1/p'); do
                cp "$lib" "$d/lib/"
                case "$lib" in
                    */ld-linux-*) loader="$d/lib/${lib##*/}" ;;
                    */libtss2-tctildr.so*) cp "${lib%/*}"/libtss2-tcti-device.so.0* "$d/lib/" ;;
                esac
            done
        fi
        run_agent="$d/initrd-agent"
        [ -z "$loader" ] || run_agent="$loader --library-path $d/lib $d/initrd-agent"
        cp /etc/initrd-agent/ca.pem "$d/"
        {
            cat /etc/initrd-agent/config.toml
            echo "ca_bundle = \"$d/ca.pem\""
        } > "$d/config.toml"
        cat > "$d/run.sh" << EOF
echo "UNLOCK-TEST-LATER-READY: root reached, running initrd-agent again" > /dev/console
/bin/busybox ip -4 addr show > /dev/console 2>&1
/bin/busybox sleep 3
$run_agent --config $d/config.toml --verbose 2> /dev/console
echo "UNLOCK-TEST-LATER-DONE: exit status \$?" > /dev/console
EOF
        echo "unlock-test: agent staged in $d (loader ${loader:-none})"
        ;;
esac
