#!/bin/sh
# Runs every cargo-fuzz target of verifier-core for a short time (default 20 s each), seeded
# with the real evidence in the shared test data. Only the stable toolchain exists here, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly-only instrumentation flags. A crash, an
# invariant violation (see verifier-core/src/fuzzing.rs), a timeout or an out-of-memory fails
# the script (and CI); the input is left under verifier-core/fuzz/artifacts/<target>/.
#
# Sanitizer: none by default, with debug assertions (overflow checks) on. verifier-core
# forbids unsafe code, so AddressSanitizer has nothing of ours to instrument (aws-lc's C is
# built by its own build script without it either); it would only halve the executions per
# second and lengthen the first build (6 min against 2 min here). FUZZ_SANITIZER=address
# restores it when the dependency tree gains unsafe Rust worth checking.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS] [TARGET...]
set -eu
cd "$(dirname "$0")/../verifier-core"
seconds="${1:-20}"
[ "$#" -gt 0 ] && shift
testdata="${UNLOCK_TESTDATA:-$(pwd)/../../shared/testdata}"
sanitizer="${FUZZ_SANITIZER:-none}"

if [ ! -f "$testdata/README.md" ]; then
    echo "fuzz-smoke: test data not found at $testdata (set UNLOCK_TESTDATA)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# Seeds: real inputs for each parser.
seed() { # seed TARGET FILE...
    t="$1"; shift
    mkdir -p "fuzz/corpus/$t"
    for f in "$@"; do
        [ -f "$f" ] && cp "$f" "fuzz/corpus/$t/seed-$(basename "$f")"
    done
    return 0
}
# hexseed TARGET NAME HEX: a hand-made seed (POSIX printf has octal escapes only).
hexseed() {
    mkdir -p "fuzz/corpus/$1"
    out="fuzz/corpus/$1/seed-$2"
    hex="$3"
    : >"$out"
    while [ -n "$hex" ]; do
        rest="${hex#??}"
        byte="${hex%"$rest"}"
        hex="$rest"
        # shellcheck disable=SC2059 # the format is the byte's octal escape
        printf "\\$(printf %03o "0x$byte")" >>"$out"
    done
}
be16() { # the big-endian u16 of $1, as raw bytes
    # shellcheck disable=SC2059
    printf "\\$(printf %03o $(($1 / 256)))\\$(printf %03o $(($1 % 256)))"
}

seed eventlog "$testdata"/eventlog/*/*.bin tests/data/windows/*.bin
seed ima "$testdata"/ima/*/*
seed attest "$testdata"/quote/keylime/quote.out "$testdata"/quote/trustee-az-snp-vtpm/tpm-quote.msg
seed signature "$testdata"/quote/keylime/quotesig.out
seed public "$testdata"/quote/keylime/ak.pub "$testdata"/quote/keylime/ek.pub
for f in "$testdata"/quote/keylime/ak.pub "$testdata"/quote/keylime/ek.pub; do
    tail -c +3 "$f" >"fuzz/corpus/public/seed-tpmt-$(basename "$f")" # TPMT_PUBLIC alone
done
seed pcr_selection "$testdata"/quote/keylime/quotepcr.out
hexseed pcr_selection sha256-0-7 000000010004000b03ff0000
hexseed pcr_selection two-banks 000000020004030300000b03ff8000
seed proto tests/fixtures/proto/v1/*.json
# quote: len (u16 BE) || TPMS_ATTEST || TPMT_SIGNATURE
q="$testdata/quote/keylime/quote.out"
mkdir -p fuzz/corpus/quote
{ be16 "$(wc -c <"$q")"; cat "$q" "$testdata/quote/keylime/quotesig.out"; } >fuzz/corpus/quote/seed-keylime
# eventlog_decode: type (u32 LE) || event data
hexseed eventlog_decode separator 0400000000000000
hexseed eventlog_decode ipl 0d000000677275625f636d643a206c696e7578202f766d6c696e757a00
hexseed eventlog_decode secureboot 0100008061dfe48bca93d211aa0d00e098032b8c0a00000000000000010000000000000053006500630075007200650042006f006f00740001
hexseed eventlog_decode bootapp 0300008000000000000000000010000000000000000000000000000004000000000000007fff0400
hexseed eventlog_decode postcode 01000000504f535420434f4445
# Merkle proof: leaf_index 1, tree_size 2, one sibling.
hexseed inclusion_proof two-leaves "000000010000000201$(printf '%064d' 0)"
# AEAD envelopes: version 1, 12-byte nonce, 32-byte secret, 16-byte tag.
hexseed payload_ciphertext v1 "01$(printf '%0120d' 0)"
hexseed sealed share "$(printf '%0160d' 0)"
# Challenge-round parameters: a 32-byte nonce, then version 1, enc (32) and a 48-byte ciphertext.
hexseed challenge_params v1 "$(printf '%064d' 0)01$(printf '%0160d' 0)"
mkdir -p fuzz/corpus/ekcert
# The IAK-style certificate (hardwareModuleName otherName, subject serialNumber) beside the
# vendors' EK certificates.
for f in "$testdata"/ekcert/*/*.pem src/ekcert/testdata/iak*.pem; do
    cp "$f" "fuzz/corpus/ekcert/seed-$(basename "$f")"
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$f" | grep -v -- '-----' |
        base64 -d >"fuzz/corpus/ekcert/seed-$(basename "$f" .pem).der" ||
        echo "fuzz-smoke: no DER seed from $f" >&2
done
# authenticode: a real signed PE (the kernel, truncated to keep the corpus small) and a
# minimal PE32+ header.
mkdir -p fuzz/corpus/authenticode
for k in /boot/vmlinuz-*; do
    [ -f "$k" ] && head -c 65536 "$k" >"fuzz/corpus/authenticode/seed-$(basename "$k")-head" && break
done
cp tests/data/ovmf-qemu-direct/binary_bios_measurements.bin fuzz/corpus/authenticode/seed-not-pe
cp src/image_signature/testdata/fbx64.efi.signed fuzz/corpus/authenticode/seed-fbx64-signed
# image_signature: real Debian PKCS#7 signatures and the sbsign forgeries.
mkdir -p fuzz/corpus/image_signature
for f in src/image_signature/testdata/*.p7; do
    cp "$f" "fuzz/corpus/image_signature/seed-$(basename "$f")"
done
# A small unified kernel image for the UKI reader (the same target): systemd-stub with tiny
# sections, the stub itself standing in for the kernel (a PE, as `.linux` must be).
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
if [ -f "$stub" ] && command -v objcopy >/dev/null 2>&1; then
    t=$(mktemp -d)
    printf 'ID=debian\n' >"$t/osrel"
    printf 'console=ttyS0 quiet' >"$t/cmdline"
    printf 'initrd' >"$t/initrd"
    objcopy --add-section .osrel="$t/osrel" --change-section-vma .osrel=0x20000 \
        --add-section .cmdline="$t/cmdline" --change-section-vma .cmdline=0x30000 \
        --add-section .linux="$stub" --change-section-vma .linux=0x40000 \
        --add-section .initrd="$t/initrd" --change-section-vma .initrd=0x80000 \
        "$stub" fuzz/corpus/authenticode/seed-uki.efi || echo "fuzz-smoke: no UKI seed" >&2
    rm -rf "$t"
fi
# tpm_response: command index (u8), sessions flag (u8), response. FlushContext success;
# ReadPublic of an empty handle (TPM_RC_HANDLE); NV_Read with a password acknowledgement.
hexseed tpm_response flush-ok 080080010000000a00000000
hexseed tpm_response readpublic-missing 0b0080010000000a0000018b
hexseed tpm_response nvread-ok 0301800200000018000000000000000500030102030000010000
# SEV-SNP and Azure HCL reports: the real HCL reports, and the SNP report inside one.
seed hcl_report "$testdata"/quote/trustee-az-snp-vtpm/hcl-report.bin "$testdata"/quote/trustee-az-tdx-vtpm/hcl-report.bin "$testdata"/quote/trustee-az-snp-vtpm/evidence-v1.json
mkdir -p fuzz/corpus/snp_report
tail -c +33 "$testdata"/quote/trustee-az-snp-vtpm/hcl-report.bin | head -c 1184 >fuzz/corpus/snp_report/seed-az-snp
# Bare SNP reports from two more real chips (provenance: src/attester/testdata/README.md).
seed snp_report src/attester/testdata/snp-report-milan-virtee.bin src/attester/testdata/snp-report-milan-go-sev-guest.bin
mkdir -p fuzz/corpus/policy
printf '%s' '{"version":1,"pcrs":[{"bank":"sha256","index":7,"allowed":["'"$(printf '%064d' 0)"'"]}],"release_pcr":{"bank":"sha256","index":15},"require_event_log":true}' \
    >fuzz/corpus/policy/seed-basic.json

flags="-O -a --sanitizer $sanitizer"
start=$(date +%s)
# shellcheck disable=SC2086 # $flags is a list of options
cargo fuzz build $flags
echo "fuzz-smoke: build took $(($(date +%s) - start)) s"
targets="$*"
[ -n "$targets" ] || targets=$(cargo fuzz list)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in $targets; do
    echo "fuzz-smoke: $t for ${seconds}s"
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # shellcheck disable=SC2086
    if ! cargo fuzz run $flags "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz-smoke: $t FAILED; input saved under verifier-core/fuzz/artifacts/$t/" >&2
        echo "fuzz-smoke: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run $flags $t <artifact>" >&2
        exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log"
done
echo "fuzz-smoke: all targets passed in $(($(date +%s) - start)) s"
