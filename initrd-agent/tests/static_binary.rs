//! The agent that goes into the initramfs is one static executable within the size budget.
//!
//! Checks the binary `scripts/build-agent-static.sh` (`make agent-static`, run by `make
//! test` and CI before the tests) produces: an ELF without a program interpreter
//! (PT_INTERP) and without any DT_NEEDED entry (no shared library at all, so nothing for
//! the dracut module to copy beside it), stripped and at most [`BUDGET`] bytes.
//! `UNLOCK_SKIP_STATIC_AGENT=1` skips it (explicit opt-out, like the swtpm tests).
// Test code reading our own build output: a malformed ELF must fail the test loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::path::PathBuf;

/// The size budget of the static agent (issue 14): 3 MB, stripped.
const BUDGET: u64 = 3_000_000;

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const SHT_SYMTAB: u32 = 2;

fn static_agent() -> Option<PathBuf> {
    if std::env::var("UNLOCK_SKIP_STATIC_AGENT").as_deref() == Ok("1") {
        eprintln!("UNLOCK_SKIP_STATIC_AGENT=1: skipping the static agent check");
        return None;
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let host = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        })
        .expect("rustc -vV names the host triple");
    let bin = target.join(host).join("agent-static/initrd-agent");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `make agent-static` (scripts/build-agent-static.sh), \
         or set UNLOCK_SKIP_STATIC_AGENT=1",
        bin.display()
    );
    Some(bin)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// What the ELF program and section headers say about linking.
#[derive(Debug, Default, PartialEq)]
struct Linking {
    interpreter: bool,
    needed: usize,
    symtab: bool,
}

/// Parses a 64-bit little-endian ELF (the only kind this workspace builds).
fn linking(elf: &[u8]) -> Linking {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    assert_eq!(elf[5], 1, "not little-endian");
    let mut out = Linking::default();
    let phoff = u64_at(elf, 0x20) as usize;
    let phentsize = u16_at(elf, 0x36) as usize;
    let phnum = u16_at(elf, 0x38) as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(elf, ph) {
            PT_INTERP => out.interpreter = true,
            PT_DYNAMIC => {
                let off = u64_at(elf, ph + 8) as usize;
                let size = u64_at(elf, ph + 32) as usize;
                for e in (off..off + size).step_by(16) {
                    match u64_at(elf, e) {
                        DT_NULL => break,
                        DT_NEEDED => out.needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let shoff = u64_at(elf, 0x28) as usize;
    let shentsize = u16_at(elf, 0x3a) as usize;
    let shnum = u16_at(elf, 0x3c) as usize;
    for i in 0..shnum {
        if u32_at(elf, shoff + i * shentsize + 4) == SHT_SYMTAB {
            out.symtab = true;
        }
    }
    out
}

#[test]
fn initramfs_agent_is_static_stripped_and_within_budget() {
    let Some(bin) = static_agent() else {
        return;
    };
    let elf = std::fs::read(&bin).unwrap();
    let l = linking(&elf);
    assert!(
        !l.interpreter,
        "{}: has a program interpreter",
        bin.display()
    );
    assert_eq!(l.needed, 0, "{}: needs shared libraries", bin.display());
    assert!(!l.symtab, "{}: is not stripped", bin.display());
    let size = elf.len() as u64;
    eprintln!("static initrd-agent: {size} bytes (budget {BUDGET})");
    assert!(
        size <= BUDGET,
        "{size} bytes is over the {BUDGET}-byte budget"
    );
}

/// The checker itself, on a binary that is certainly dynamic: the test binary running it.
#[test]
fn the_checker_sees_a_dynamic_executable() {
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let l = linking(&me);
    assert!(l.interpreter);
    assert!(l.needed > 0);
    assert!(l.symtab);
}
