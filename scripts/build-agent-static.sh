#!/bin/sh
# Builds initrd-agent as ONE statically linked executable: what goes into the initramfs
# (dracut module, vm-tests). glibc's static libc (-C target-feature=+crt-static) on the
# host's own target triple; the explicit --target keeps the flag off build scripts and
# proc-macros, which must stay dynamic. The agent needs neither NSS nor dlopen: it talks to
# the TPM without libtss2 (src/tpm/), resolves no host names through NSS (see
# docs/boot-integration in README), and aws-lc is linked in from its static archive.
#
# Prints the path of the stripped binary and its size. Extra arguments go to cargo.
set -eu
cd "$(dirname "$0")/.."
cargo="${CARGO:-cargo}"
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
    "$cargo" build --release -p initrd-agent --bin initrd-agent --target "$host" "$@"
bin="${CARGO_TARGET_DIR:-target}/$host/release/initrd-agent"
echo "static initrd-agent: $bin ($(wc -c <"$bin") bytes, stripped)"
