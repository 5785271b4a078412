#!/bin/sh
# Removes the key files initrd-agent may have written: every *.key in
# /run/cryptsetup-keys.d/ (a tmpfs directory that only exists in the initramfs for this
# purpose) and the file named by rd.unlock.keyfile= when it lies elsewhere.
set -eu
trap 'exit 1' TERM

removed=0
for f in /run/cryptsetup-keys.d/*.key; do
    [ -e "$f" ] || continue
    rm -f -- "$f"
    removed=$((removed + 1))
done

read -r cmdline < /proc/cmdline
set -f # split the command line into words, without globbing them
# shellcheck disable=SC2086 # word splitting is the point
for arg in $cmdline; do
    case "$arg" in
        rd.unlock.keyfile=/*)
            f="${arg#rd.unlock.keyfile=}"
            if [ -e "$f" ]; then
                rm -f -- "$f"
                removed=$((removed + 1))
            fi
            ;;
    esac
done

if [ "$removed" -gt 0 ]; then
    echo "initrd-agent-cleanup: removed $removed key file(s)"
fi
