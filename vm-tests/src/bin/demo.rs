//! `make demo` / `cargo run -p vm-tests --bin demo [-- --uefi]`: one VM with an swtpm TPM
//! and a LUKS root boots the real initramfs; initrd-agent attests to the real unlock-server
//! on this host and the disk unlocks. Prints what a person wants to see: the enrollment,
//! the VM's console, and what the server recorded.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a demo: panics explain

use std::process::ExitCode;

use vm_tests::policy::capture;
use vm_tests::server::sessions;
use vm_tests::vm::boot;
use vm_tests::{Artifacts, Firmware, Server, Tpm, VmConfig};

fn main() -> ExitCode {
    let uefi = std::env::args().any(|a| a == "--uefi");
    let firmware = if uefi { Firmware::Uefi } else { Firmware::Bios };
    println!("== building: release binaries, initramfs with the dracut module, LUKS root image");
    let Some(art) = Artifacts::get() else {
        eprintln!("demo: the VM packages are missing (run scripts/install-vm-deps.sh)");
        return ExitCode::FAILURE;
    };
    println!("   initramfs  {}", art.initrd.display());
    println!(
        "   root disk  {} (LUKS UUID {})",
        art.root.path.display(),
        art.root.uuid
    );

    println!("== learning the policy: a capture boot prints `initrd-agent evidence`");
    let cap = capture(art, firmware, &[]);
    let policy = cap.policy(&[0, 1, 2, 3, 4, 5, 6, 7]);
    for i in 0..8u8 {
        println!(
            "   PCR {i:2} = {}",
            cap.replayed.get(&i).map_or("-", String::as_str)
        );
    }

    println!("== the machine's TPM (swtpm, EK certificate from a local CA) and the server");
    let ca = tempfile::tempdir_in(&art.env.cache).unwrap();
    let tpm = Tpm::provision(art, ca.path());
    let server = Server::start(art, &tpm.ek_ca);
    println!(
        "   initrd-agent ek --out ek.pub  -> agent id {}",
        tpm.agent_id
    );
    println!(
        "   unlock-server listening on {} (the VM sees it at https://10.0.2.100:8443)",
        server.url
    );
    server.enroll(&tpm.ek_pub, &policy, &["--max-attestations", "1"]);
    println!("   unlockctl enroll --ek-pub ek.pub --payload <LUKS passphrase> --policy <PCRs 0-7, event log required>");

    println!(
        "== booting ({}, {})",
        if uefi { "OVMF" } else { "SeaBIOS" },
        if art.env.kvm { "KVM" } else { "TCG" }
    );
    let mut cfg = VmConfig::new("demo", Some(server.port));
    cfg.firmware = firmware;
    cfg.echo = true;
    // systemd's status lines (cryptsetup, switch-root) for the person watching; the kernel
    // command line is not in the pinned PCRs 0-7.
    cfg.extra_cmdline.push("systemd.show_status=1".into());
    println!("   kernel command line: {}", cfg.cmdline(art));
    let b = boot(art, &tpm, &cfg);

    println!("== result");
    let st = server.status(&tpm.agent_id);
    for role in ["verifier", "tenant"] {
        for s in sessions(&st, role) {
            println!(
                "   server {role}: boot session resetCount={} releases={} state={}",
                s.reset_count, s.releases, s.state
            );
        }
    }
    println!("   {}", b.figures());
    match b.root_line() {
        Some((t, line)) => {
            println!(
                "   disk unlocked, real root reached after {:.1} s: {line}",
                t.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        None => {
            println!(
                "   the root was NOT reached; console log: {}",
                b.log.display()
            );
            ExitCode::FAILURE
        }
    }
}
