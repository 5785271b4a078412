#!/bin/sh
# dracut cmdline hook: when the kernel command line names an unlock server, the network
# must come up even though the root is local (rd.neednet=1), and systemd-networkd is
# started now rather than when the initqueue gets to it, so DHCP runs while the agent
# talks to the TPM.
# shellcheck source=/dev/null # dracut's library, present in the initramfs
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

if getargbool 1 rd.unlock \
    && { getarg rd.unlock.server= > /dev/null \
        || getarg rd.unlock.verifier= > /dev/null \
        || getarg rd.unlock.tenant= > /dev/null \
        || [ -e /etc/cmdline.d/91unlock.conf ]; }; then
    if ! getargbool 0 rd.neednet; then
        echo "rd.neednet=1" > /etc/cmdline.d/91unlock-net.conf
    fi
    if [ -e /usr/lib/systemd/system/systemd-networkd.service ]; then
        systemctl --no-block start systemd-networkd.service > /dev/null 2>&1 || :
    fi
fi
