# One entry point for people and CI. `make test` is the README's test command.
CARGO ?= cargo
FUZZ_SECONDS ?= 20

.PHONY: deps build test lint fuzz-smoke bench ci

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

## Installs what is needed, then runs every test of the workspace (unit, testdata, swtpm).
test: deps
	$(CARGO) test --workspace --no-fail-fast

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh .ci/run

## Runs each cargo-fuzz target for FUZZ_SECONDS.
fuzz-smoke:
	./scripts/fuzz-smoke.sh $(FUZZ_SECONDS)

bench:
	$(CARGO) bench -p verifier-core

ci: lint test fuzz-smoke
