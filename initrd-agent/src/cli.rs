//! Command line interface and the top-level `run`: what the process prints and returns.
//!
//! Output contract (parsed by the VM tests and read by people at the console; all lines go
//! to stderr, which systemd sends to the console and the journal):
//! - exactly one final status line, `initrd-agent: <status>`;
//! - with `--verbose`, before it, one `initrd-agent: step <name> <ms> ms` line per step.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigSource, Loaded};
use crate::flow::{self, FlowError, Steps, EXIT_UNLOCKED};

const AFTER_HELP: &str = "\
KERNEL COMMAND LINE (overrides the config file):
  rd.unlock=0                 skip: exit 0 at once, printing 'initrd-agent: skipped (rd.unlock=0)'
  rd.unlock.server=URL        both roles on one server: verifier at URL/verifier, tenant at URL/tenant
  rd.unlock.verifier=URL      verifier role base URL (split-trust deployments; wins over .server)
  rd.unlock.tenant=URL        tenant role base URL (wins over .server)
  rd.unlock.timeout=SECONDS   overall budget, whole seconds (default 30)
  rd.unlock.keyfile=PATH      where the key is written (default /run/cryptsetup-keys.d/<volume>.key
                              for the first rd.luks.uuid=/rd.luks.name= volume, else root.key)
  rd.unlock.tcti=TCTI         TPM access (default device:/dev/tpmrm0; e.g. swtpm:host=127.0.0.1,port=2321)
  rd.unlock.ek=ecc|rsa        EK template: ecc = NIST P-256 (default), rsa = RSA-2048.
                              No automatic fallback: the EK is the machine's identity.
  rd.unlock.insecure=1        allow http:// URLs (tests only)
  Unknown rd.unlock.* parameters are an error.

CONFIG FILE (TOML, default /etc/initrd-agent/config.toml; every key optional):
  verifier_url = \"https://unlock.example/verifier\"
  tenant_url = \"https://unlock.example/tenant\"
  ca_bundle = \"/etc/initrd-agent/ca.pem\"     # PEM CAs trusted for the servers' TLS
  tcti = \"device:/dev/tpmrm0\"
  ek = \"ecc\"                                 # or \"rsa\"
  key_file = \"/run/cryptsetup-keys.d/root.key\"
  timeout_secs = 30                          # overall budget (1-3600)
  step_timeout_secs = 10                     # per HTTP request (1-timeout_secs)
  retries = 3                                # per request, connection errors and 5xx only (0-10)
  release_pcr = 15                           # extended before the key is written, and by `latch` (0-23)
  event_log = \"/sys/kernel/security/tpm0/binary_bios_measurements\"
  ima_log = \"/sys/kernel/security/ima/binary_runtime_measurements\"
  insecure_http = false
  Unknown keys are an error.

LATCH (`initrd-agent latch`, run by the dracut module before switch-root on every path):
  extends release_pcr with the release event in every active bank, prints
  'initrd-agent: latch: release PCR <n> extended' (exit 0) or
  'initrd-agent: latch: error: <detail>' (exit 3). Reads tcti and release_pcr only.

OUTPUT (stderr): one status line, e.g.
  initrd-agent: unlocked (key written to /run/cryptsetup-keys.d/root.key in 0.42 s)
  initrd-agent: refused by verifier: policy_denied: <message> (request id <id>)
  initrd-agent: server unreachable: tenant: <detail> (request id <id>)
  initrd-agent: bad answer from verifier: <detail>
  initrd-agent: error: <detail>
With --verbose, per-step lines first: 'initrd-agent: step <name> <ms> ms' for the steps
tpm, register, activate, challenge, quote, logs, attest, decrypt, extend, write.
The request id is sent as x-request-id; the server logs the request under it.

EXIT CODES:
  0  unlocked (or skipped with rd.unlock=0; evidence or EK written; latch extended)
  1  refused by a role, or a role's answer was unusable
  2  server unreachable or out of time
  3  local error (configuration, TPM, file system)";

/// `initrd-agent`: unlocks the root volume with a key released by the unlock server after a
/// TPM attestation.
#[derive(Debug, Parser)]
#[command(name = "initrd-agent", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Config file (TOML). Without it, /etc/initrd-agent/config.toml is read when present.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Read the kernel command line from this file instead of /proc/cmdline (tests).
    #[arg(long, global = true, value_name = "PATH")]
    pub cmdline_file: Option<PathBuf>,
    /// Print a timing line per step.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// What to do (default: unlock).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attest and write the released key (the default).
    Unlock,
    /// Capture this machine's evidence (PCRs of all banks 0-23, event log, IMA log, EK/AK
    /// public) into a JSON file for offline policy work. Talks to no server.
    Evidence {
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the EK's public area (TPMT_PUBLIC, binary) for enrollment
    /// (`unlockctl enroll --ek-pub FILE`) and print the agent id. Talks to no server.
    Ek {
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Register and activate this TPM's AK with every role now, and keep the EK and AK in
    /// the TPM, so that the roles pin the AK at enrollment and the first boot already goes
    /// straight to the challenges (`unlockctl bind` runs it). Attests nothing.
    Register,
    /// Extend the release PCR (and nothing else), so that no quote later in this boot
    /// passes the release policy. Run by the dracut module before switch-root on every path,
    /// whether or not a key was released; ignores rd.unlock=0. Talks to no server.
    Latch,
    /// Host mode: serve host TPM quotes to many requesters, one quote per batch
    /// (POST /v1/provider/quote, GET /v1/provider/ak). Keeps running. See docs/provider.md.
    Provider(crate::provider::ProviderArgs),
    /// On the installed system after an update: predict the next boot's measurements from
    /// the new kernel/initrd and ask both roles, authenticated by this TPM's AK, to allow
    /// them. The change waits for an operator (`unlockctl policy approve`).
    RequestAllow(crate::allow::AllowArgs),
}

fn say(line: &str) {
    eprintln!("initrd-agent: {line}");
}

fn fail(e: &FlowError) -> ExitCode {
    say(&e.console_line());
    ExitCode::from(e.exit_code())
}

/// Runs the agent and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let started = Instant::now();
    // ESYS logs every TPM warning to stderr; the console should show our line only.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    let source = match &cli.config {
        Some(p) => ConfigSource {
            path: p.clone(),
            explicit: true,
        },
        None => ConfigSource::default(),
    };
    let cmdline_path = cli
        .cmdline_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
    let cmdline = match std::fs::read_to_string(&cmdline_path) {
        Ok(c) => c,
        Err(source) => {
            return fail(&FlowError::Config(config::ConfigError::Read {
                path: cmdline_path,
                source,
            }))
        }
    };

    match cli.command {
        Some(Command::Evidence { out }) => {
            let result = config::load_local(&source, &cmdline)
                .map_err(FlowError::from)
                .and_then(|local| crate::evidence::capture(&local))
                .and_then(|ev| crate::evidence::write(&ev, &out));
            match result {
                Ok(()) => {
                    say(&format!("evidence written to {}", out.display()));
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => fail(&e),
            }
        }
        Some(Command::Ek { out }) => {
            let result = config::load_local(&source, &cmdline)
                .map_err(FlowError::from)
                .and_then(|local| crate::evidence::write_ek(&local, &out));
            match result {
                Ok(agent_id) => {
                    say(&format!(
                        "EK public area written to {} (agent id {agent_id})",
                        out.display()
                    ));
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => fail(&e),
            }
        }
        Some(Command::Register) => {
            let config = match config::load(&source, &cmdline) {
                Ok(Loaded::Run(c)) => c,
                Ok(Loaded::Skip) => {
                    say("register: the kernel command line says rd.unlock=0; nothing done");
                    return ExitCode::from(EXIT_UNLOCKED);
                }
                Err(e) => return fail(&FlowError::Config(e)),
            };
            let mut steps = Steps::new(cli.verbose);
            match flow::register(&config, &mut steps, started) {
                Ok(agent_id) => {
                    say(&format!(
                        "registered: AK activated and pinned with every role (agent id {agent_id})"
                    ));
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => fail(&e),
            }
        }
        Some(Command::Latch) => {
            let result = config::load_local(&source, &cmdline)
                .map_err(FlowError::from)
                .and_then(|local| crate::latch::latch(&local).map(|()| local.release_pcr));
            match result {
                Ok(pcr) => {
                    say(&format!("latch: release PCR {pcr} extended"));
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => {
                    say(&format!("latch: error: {e}"));
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Some(Command::Provider(args)) => {
            let result = config::load_local(&source, &cmdline)
                .map_err(crate::provider::ProviderError::from)
                .and_then(|local| crate::provider::run_cli(&args, &local));
            match result {
                Ok(never) => match never {},
                Err(e) => {
                    say(&format!("provider: {e}"));
                    ExitCode::from(3)
                }
            }
        }
        Some(Command::RequestAllow(args)) => {
            let config = match config::load(&source, &cmdline) {
                Ok(Loaded::Run(c)) => c,
                Ok(Loaded::Skip) => {
                    say("request-allow: rd.unlock=0 on this boot's command line: no server to ask");
                    return ExitCode::from(3);
                }
                Err(e) => return fail(&FlowError::Config(e)),
            };
            match crate::allow::request(&config, &args, &cmdline) {
                Ok(answers) => {
                    for (role, a) in &answers {
                        say(&format!(
                            "request-allow: {role}: change {} is {}",
                            a.id,
                            a.state.as_str()
                        ));
                    }
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => fail(&e),
            }
        }
        Some(Command::Unlock) | None => {
            let config = match config::load(&source, &cmdline) {
                Ok(Loaded::Skip) => {
                    say("skipped (rd.unlock=0)");
                    return ExitCode::from(EXIT_UNLOCKED);
                }
                Ok(Loaded::Run(c)) => c,
                Err(e) => return fail(&FlowError::Config(e)),
            };
            let mut steps = Steps::new(cli.verbose);
            match flow::unlock(&config, &mut steps, started) {
                Ok(done) => {
                    say(&format!(
                        "unlocked (key written to {} in {:.2} s)",
                        done.key_file.display(),
                        started.elapsed().as_secs_f64()
                    ));
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => fail(&e),
            }
        }
    }
}
