#!/bin/sh
# Builds initrd-agent as ONE statically linked executable: what goes into the initramfs
# (dracut module, vm-tests). glibc's static libc (-C target-feature=+crt-static) on the
# host's own target triple; the explicit --target keeps the flag off build scripts and
# proc-macros, which must stay dynamic. The agent needs neither NSS nor dlopen: it talks to
# the TPM without libtss2 (src/tpm/), resolves no host names through NSS (see
# docs/boot-integration in README), and aws-lc is linked in from its static archive.
#
# Profile `agent-static` (workspace Cargo.toml): size-optimized, full LTO, abort on panic,
# stripped. Prints the path of the binary and its size. Extra arguments go to cargo.
set -eu
cd "$(dirname "$0")/.."
cargo="${CARGO:-cargo}"
host=$(rustc -vV | sed -n 's/^host: //p')
# No unwind tables for our code: with panic = "abort" nothing unwinds. Relative
# relocations packed (DT_RELR, glibc >= 2.36): the static-pie keeps ASLR for 2 KB of
# relocations instead of 100 KB.
RUSTFLAGS="-C target-feature=+crt-static -C force-unwind-tables=no -C link-arg=-Wl,-z,pack-relative-relocs" \
    "$cargo" build --profile agent-static -p initrd-agent --no-default-features --bin initrd-agent --target "$host" "$@"
bin="${CARGO_TARGET_DIR:-target}/$host/agent-static/initrd-agent"
echo "static initrd-agent: $bin ($(wc -c <"$bin") bytes, stripped)"
