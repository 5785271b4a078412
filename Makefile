# One entry point for people and CI. `make test` is the README's test command.
CARGO ?= cargo
FUZZ_SECONDS ?= 20

.PHONY: deps build agent-static test lint fuzz-smoke bench ci vm-deps vm-test demo

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

## The agent for the initramfs: one statically linked, stripped executable (no TPM or crypto
## library beside it) at target/<host triple>/agent-static/initrd-agent; prints its size.
agent-static:
	CARGO=$(CARGO) ./scripts/build-agent-static.sh

## Installs what is needed, then runs every test of the workspace: unit, test data, swtpm,
## PostgreSQL, and the QEMU boots of vm-tests (UNLOCK_SKIP_VM=1 skips those, locally only).
## The static agent is built first: initrd-agent/tests/static_binary.rs checks it.
test: deps vm-deps agent-static
	$(CARGO) test --workspace --no-fail-fast
	# The swtpm end-to-end suites again, with the static agent that goes into the initramfs.
	# (An absolute path: the tests run in the package's directory.)
	UNLOCK_AGENT_BIN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/$$(rustc -vV | sed -n 's/^host: //p')/agent-static/initrd-agent" \
		$(CARGO) test -p unlock-server --test e2e_swtpm --test e2e_ek_kinds --test e2e_bootpath --test e2e_snp_vtpm --no-fail-fast

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh .ci/run
	shellcheck -s bash dracut-module/91unlock/module-setup.sh.in vm-tests/dracut/99unlock-test/module-setup.sh
	shellcheck dracut-module/91unlock/*.sh dracut-module/hooks/*.sh vm-tests/dracut/99unlock-test/*.sh
	shellcheck initramfs-tools/hooks/initrd-agent initramfs-tools/scripts/*/initrd-agent \
		initramfs-tools/keyscript vm-tests/initramfs-tools/build-initramfs.sh \
		vm-tests/initramfs-tools/hooks/unlock-test vm-tests/initramfs-tools/scripts/*/unlock-test

## Runs each cargo-fuzz target for FUZZ_SECONDS.
fuzz-smoke:
	./scripts/fuzz-smoke.sh $(FUZZ_SECONDS)

bench:
	$(CARGO) bench -p verifier-core

ci: lint test fuzz-smoke

vm-deps:
	./scripts/install-vm-deps.sh

## QEMU + swtpm boots of the real initramfs with the dracut module and with the
## initramfs-tools integration, the static agent inside (vm-tests/README.md).
## As root (dracut, mkinitramfs in a mount namespace); about 10-12 min under TCG on 2 cores.
vm-test: deps vm-deps agent-static
	$(CARGO) test -p vm-tests -- --nocapture

## One VM unlocking its disk against a local unlock-server, console shown.
demo: deps vm-deps
	$(CARGO) run -p vm-tests --bin demo
