#!/bin/sh
# Runs every cargo-fuzz target of verifier-core for a short time (default 20 s each), seeded
# with the real evidence in the shared test data. Only the stable toolchain exists here, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly-only sanitizer flags. A crash fails the
# script (and CI); the crashing input is left under verifier-core/fuzz/artifacts/.
set -eu
cd "$(dirname "$0")/../verifier-core"
seconds="${1:-20}"
testdata="${UNLOCK_TESTDATA:-$(pwd)/../../shared/testdata}"

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
seed eventlog "$testdata"/eventlog/*/*.bin
seed ima "$testdata"/ima/*/*
seed attest "$testdata"/quote/keylime/quote.out "$testdata"/quote/trustee-az-snp-vtpm/tpm-quote.msg
seed signature "$testdata"/quote/keylime/quotesig.out
seed public "$testdata"/quote/keylime/ak.pub "$testdata"/quote/keylime/ek.pub
seed pcr_selection "$testdata"/quote/keylime/quotepcr.out
seed proto tests/fixtures/proto/v1/*.json

cargo fuzz build -O
log=$(mktemp)
for t in $(cargo fuzz list); do
    echo "fuzz-smoke: $t for ${seconds}s"
    mkdir -p "fuzz/corpus/$t"
    if ! cargo fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz-smoke: $t FAILED"
        exit 1
    fi
    tail -n 1 "$log"
done
rm -f "$log"
