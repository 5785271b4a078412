//! Command line interface and the top-level `run`: what the process prints and returns.
//!
//! Output contract (parsed by the VM tests and read by people at the console; all lines go
//! to stderr, which systemd sends to the console and the journal):
//! - exactly one final status line, `initrd-agent: <status>`;
//! - with `--verbose`, before it, one `initrd-agent: step <name> <ms> ms` line per step.

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::config::{self, ConfigSource, Loaded};
use crate::flow::{self, FlowError, Steps, EXIT_UNLOCKED};
use crate::provider::ProviderArgs;

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
  rd.unlock.ek=ecc|rsa|ecc-p384|rsa-3072
                              EK template: ecc = NIST P-256 (default), rsa = RSA-2048,
                              ecc-p384 / rsa-3072 = the high-range SHA-384 templates.
                              No automatic fallback: the EK is the machine's identity.
  rd.unlock.insecure=1        allow http:// URLs (tests only)
  Unknown rd.unlock.* parameters are an error.

CONFIG FILE (TOML, default /etc/initrd-agent/config.toml; every key optional):
  verifier_url = \"https://unlock.example/verifier\"
  tenant_url = \"https://unlock.example/tenant\"
  ca_bundle = \"/etc/initrd-agent/ca.pem\"     # PEM CAs trusted for the servers' TLS
  tcti = \"device:/dev/tpmrm0\"
  ek = \"ecc\"                                 # or \"rsa\", \"ecc-p384\", \"rsa-3072\"
  key_file = \"/run/cryptsetup-keys.d/root.key\"
  timeout_secs = 30                          # overall budget (1-3600)
  step_timeout_secs = 10                     # per HTTP request (1-timeout_secs)
  retries = 3                                # per request, connection errors and 5xx only (0-10); no route yet: until the timeout
  release_pcr = 15                           # extended before the key is written, and by `latch` (0-23)
  event_log = \"/sys/kernel/security/tpm0/binary_bios_measurements\"
  ima_log = \"/sys/kernel/security/ima/binary_runtime_measurements\"
  insecure_http = false
  iak_handle = 0x81020001                    # the IAK path (both keys or neither): the OEM's IAK
  iak_cert = \"/etc/initrd-agent/iak.pem\"     #   and its certificate (+ intermediates); no activation round
  evidence = \"tpm\"                         # or \"snp-vtpm\": Azure SEV-SNP CVM (vTPM AK 0x81000003,
                                             # HCL report from NV 0x01400001; use ek = \"rsa\")
  vcek_file = \"/etc/initrd-agent/vcek.der\"  # the chip's VCEK (snp-vtpm only)
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
tpm, register, activate (or register-iak on the IAK path), challenge, quote, logs, attest, decrypt, extend, write.
The request id is sent as x-request-id; the server logs the request under it.

EXIT CODES:
  0  unlocked (or skipped with rd.unlock=0; evidence or EK written; latch extended)
  1  refused by a role, or a role's answer was unusable
  2  server unreachable or out of time
  3  local error (configuration, TPM, file system)";

/// `initrd-agent`: unlocks the root volume with a key released by the unlock server after a
/// TPM attestation.
#[derive(Debug)]
pub struct Cli {
    /// Config file (TOML). Without it, /etc/initrd-agent/config.toml is read when present.
    pub config: Option<PathBuf>,
    /// Read the kernel command line from this file instead of /proc/cmdline (tests).
    pub cmdline_file: Option<PathBuf>,
    /// Print a timing line per step.
    pub verbose: bool,
    /// What to do (default: unlock).
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug)]
pub enum Command {
    /// Attest and write the released key (the default).
    Unlock,
    /// Capture this machine's evidence (PCRs of all banks 0-23, event log, IMA log, EK/AK
    /// public) into a JSON file for offline policy work. Talks to no server.
    Evidence {
        /// Output file.
        out: PathBuf,
    },
    /// Write the EK's public area (TPMT_PUBLIC, binary) for enrollment
    /// (`unlockctl enroll --ek-pub FILE`) and print the agent id. Talks to no server.
    Ek {
        /// Output file.
        out: PathBuf,
    },
    /// Extend the release PCR (and nothing else), so that no quote later in this boot
    /// passes the release policy. Run by the dracut module before switch-root on every path,
    /// whether or not a key was released; ignores rd.unlock=0. Talks to no server.
    Latch,
    /// Host mode: serve host TPM quotes to many requesters, one quote per batch
    /// (POST /v1/provider/quote, GET /v1/provider/ak). Keeps running. See docs/provider.md.
    Provider(ProviderArgs),
    /// Register and activate this TPM's AK with every role now, and keep the EK and AK in
    /// the TPM, so that the roles pin the AK at enrollment and the first boot already goes
    /// straight to the challenges (`unlockctl bind` runs it). Attests nothing.
    Register,
    /// On the installed system after an update: predict the next boot's measurements from
    /// the new kernel/initrd and ask both roles, authenticated by this TPM's AK, to allow
    /// them. The change waits for an operator (`unlockctl policy approve`).
    RequestAllow(crate::allow::AllowArgs),
    /// Auto-enrollment: register with every role (whose rules admit this TPM), make K_b,
    /// split it and deposit each role's part, quoted by the AK the role pinned. No admin
    /// token; `unlockctl bind --auto-enroll` runs it.
    Deposit {
        /// The payload (the disk key) to encrypt under K_b.
        payload: PathBuf,
    },
}

const USAGE: &str = "\
initrd-agent: unlocks the root volume with a key released by the unlock server after a TPM
attestation.

USAGE: initrd-agent [OPTIONS] [COMMAND]

COMMANDS:
  unlock     Attest and write the released key (the default)
  evidence   --out FILE: capture this machine's evidence (PCRs of all banks 0-23, event log,
             IMA log, EK/AK public) into a JSON file for offline policy work. Talks to no server.
  ek         --out FILE: write the EK's public area (TPMT_PUBLIC, binary) for enrollment
             (unlockctl enroll --ek-pub FILE) and print the agent id. Talks to no server.
  latch      Extend the release PCR (and nothing else), so that no quote later in this boot
             passes the release policy. Run by the dracut module before switch-root on every
             path; ignores rd.unlock=0. Talks to no server.
  provider   Host mode: serve host TPM quotes to many requesters, one quote per batch
             (POST /v1/provider/quote, GET /v1/provider/ak). Keeps running. See
             docs/provider.md and `initrd-agent provider --help`.
  register   Register and activate this TPM's AK with every role now and keep EK and AK in
             the TPM (the roles pin the AK at enrollment; `unlockctl bind` runs it).
  deposit    --payload FILE: auto-enrollment (roles whose [[auto_enroll]] rules admit this
             TPM): register, make K_b here, split it and deposit each role's part quoted by
             this TPM's AK; neither role ever holds K_b (`unlockctl bind --auto-enroll`).
  request-allow --kernel FILE [--initrd FILE] [--cmdline TEXT] [--efi-app FILE]...
             [--boot-path efi-stub|grub|qemu-direct|uki] [--qemu-memory-mib N] [--note TEXT]:
             after an update, predict the next boot's measurements from the new files and
             ask both roles, quoted by this TPM's AK, to allow them (pending until an
             operator approves).

OPTIONS (before or after the command):
  -c, --config PATH        Config file (TOML). Without it, /etc/initrd-agent/config.toml is
                           read when present.
      --cmdline-file PATH  Read the kernel command line from this file instead of /proc/cmdline
                           (tests).
  -v, --verbose            Print a timing line per step.
  -h, --help               Print help.
  -V, --version            Print the version.
";

const PROVIDER_USAGE: &str = "\
USAGE: initrd-agent provider [OPTIONS]

  --server URL              Connect mode: instead of listening, connect out to
                            `unlock-server --role provider` at this URL and quote the batches
                            it collects (see docs/provider.md).
  --token-file FILE         Connect mode: file holding the host bearer token (host.token).
  --ca FILE                 Connect mode: CA bundle (PEM) to trust for an https server.
  --listen ADDR:PORT        Address to listen on (plain HTTP). Ignored with --server.
                            [default: 127.0.0.1:8450]
  --window-ms MS            How long the first nonce of a batch waits for others. [default: 50]
  --max-batch N             Most requesters answered by one quote, 1-65536 (1 turns batching
                            off). [default: 1000]
  --max-pending N           Most requests waiting for a quote; more get 503. [default: 20000]
  --max-connections N       Most open connections; more get 503. [default: 4096]
  --pcrs SELECTION          PCRs every host quote covers, bank:indexes (e.g. sha256:0-7,14).
                            [default: sha256:0-7]
  --no-event-log            Do not send the host's event log with the answers.
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run the agent.
    Run(Cli),
    /// Print this help text and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
}

/// A command line the agent does not understand.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

impl Cli {
    /// Parses the process's arguments; prints help or the version and exits 0, or prints
    /// the problem and exits 3 (a local configuration error, as the exit codes define).
    pub fn parse() -> Self {
        match Self::try_parse_from(std::env::args_os().skip(1)) {
            Ok(Parsed::Run(cli)) => cli,
            Ok(Parsed::Help(text)) => {
                print!("{text}");
                std::process::exit(0)
            }
            Ok(Parsed::Version) => {
                println!("initrd-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("initrd-agent: error: {e} (see initrd-agent --help)");
                std::process::exit(3)
            }
        }
    }

    /// Parses `args` (without the program name). Hand-written rather than clap: the
    /// command line is small, and clap was a tenth of the static initramfs binary.
    pub fn try_parse_from<I, S>(args: I) -> Result<Parsed, UsageError>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        let mut args = args
            .into_iter()
            .map(|a| {
                a.into()
                    .into_string()
                    .map_err(|a| usage(format!("argument {a:?} is not UTF-8")))
            })
            .collect::<Result<Vec<String>, _>>()?
            .into_iter();
        let mut cli = Cli {
            config: None,
            cmdline_file: None,
            verbose: false,
            command: None,
        };
        let mut name: Option<String> = None;
        let mut out: Option<PathBuf> = None;
        let mut provider = ProviderArgs::default();
        let mut allow = AllowFlags::default();
        let mut provider_seen = ProviderSeen::default();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |what: &str| -> Result<String, UsageError> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => args
                        .next()
                        .ok_or_else(|| usage(format!("{flag} needs a value ({what})"))),
                }
            };
            match flag.as_str() {
                "-h" | "--help" => {
                    let text = if name.as_deref() == Some("provider") {
                        PROVIDER_USAGE.to_owned()
                    } else {
                        format!("{USAGE}\n{AFTER_HELP}\n")
                    };
                    return Ok(Parsed::Help(text));
                }
                "-V" | "--version" => return Ok(Parsed::Version),
                "-c" | "--config" => cli.config = Some(PathBuf::from(value("PATH")?)),
                "--cmdline-file" => cli.cmdline_file = Some(PathBuf::from(value("PATH")?)),
                "-v" | "--verbose" => cli.verbose = true,
                "--out" if matches!(name.as_deref(), Some("evidence" | "ek")) => {
                    out = Some(PathBuf::from(value("FILE")?));
                }
                "--payload" if name.as_deref() == Some("deposit") => {
                    out = Some(PathBuf::from(value("FILE")?));
                }
                f if name.as_deref() == Some("provider") && f.starts_with("--") => {
                    provider_flag(&mut provider, &mut provider_seen, f, &mut value)?;
                }
                f if name.as_deref() == Some("request-allow") && f.starts_with("--") => {
                    allow.flag(f, &mut value)?;
                }
                f if f.starts_with('-') => {
                    return Err(usage(format!("unexpected argument {f}")));
                }
                sub if name.is_none() => match sub {
                    "unlock" | "evidence" | "ek" | "latch" | "provider" | "register"
                    | "request-allow" | "deposit" => {
                        name = Some(sub.to_owned());
                    }
                    "help" => return Ok(Parsed::Help(format!("{USAGE}\n{AFTER_HELP}\n"))),
                    other => return Err(usage(format!("unknown command {other:?}"))),
                },
                other => return Err(usage(format!("unexpected argument {other:?}"))),
            }
        }
        let out_required =
            |out: Option<PathBuf>| out.ok_or_else(|| usage("--out FILE is required"));
        cli.command = match name.as_deref() {
            None => None,
            Some("unlock") => Some(Command::Unlock),
            Some("evidence") => Some(Command::Evidence {
                out: out_required(out)?,
            }),
            Some("ek") => Some(Command::Ek {
                out: out_required(out)?,
            }),
            Some("latch") => Some(Command::Latch),
            Some("register") => Some(Command::Register),
            Some("deposit") => Some(Command::Deposit {
                payload: out.ok_or_else(|| usage("--payload FILE is required"))?,
            }),
            Some("request-allow") => Some(Command::RequestAllow(allow.finish()?)),
            Some(_) => {
                if provider.server.is_none()
                    && (provider.token_file.is_some() || provider.ca.is_some())
                {
                    return Err(usage("--token-file and --ca require --server"));
                }
                Some(Command::Provider(provider))
            }
        };
        Ok(Parsed::Run(cli))
    }
}

/// Provider flags given twice are an error (as they were with clap).
#[derive(Debug, Default)]
struct ProviderSeen(Vec<String>);

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, UsageError> {
    v.parse()
        .map_err(|_| usage(format!("{flag}: {v:?} is not a valid number")))
}

fn provider_flag(
    p: &mut ProviderArgs,
    seen: &mut ProviderSeen,
    flag: &str,
    value: &mut dyn FnMut(&str) -> Result<String, UsageError>,
) -> Result<(), UsageError> {
    if seen.0.iter().any(|f| f == flag) {
        return Err(usage(format!("{flag} given more than once")));
    }
    seen.0.push(flag.to_owned());
    match flag {
        "--server" => p.server = Some(value("URL")?),
        "--token-file" => p.token_file = Some(PathBuf::from(value("FILE")?)),
        "--ca" => p.ca = Some(PathBuf::from(value("FILE")?)),
        "--listen" => {
            let v = value("ADDR:PORT")?;
            p.listen = v
                .parse()
                .map_err(|_| usage(format!("--listen: {v:?} is not an ADDR:PORT")))?;
        }
        "--window-ms" => p.window_ms = number(flag, &value("MS")?)?,
        "--max-batch" => {
            let n: u32 = number(flag, &value("N")?)?;
            if !(1..=65536).contains(&n) {
                return Err(usage(format!("--max-batch: {n} is not in 1..=65536")));
            }
            p.max_batch = n;
        }
        "--max-pending" => p.max_pending = number(flag, &value("N")?)?,
        "--max-connections" => p.max_connections = number(flag, &value("N")?)?,
        "--pcrs" => p.pcrs = value("SELECTION")?,
        "--no-event-log" => p.no_event_log = true,
        other => return Err(usage(format!("unexpected argument {other} for provider"))),
    }
    Ok(())
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
                    let how = if config.iak.is_some() {
                        "IAK certificate accepted"
                    } else {
                        "AK activated"
                    };
                    say(&format!(
                        "registered: {how} and pinned with every role (agent id {agent_id})"
                    ));
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => fail(&e),
            }
        }
        Some(Command::Deposit { payload }) => {
            let config = match config::load(&source, &cmdline) {
                Ok(Loaded::Run(c)) => c,
                Ok(Loaded::Skip) => {
                    say("deposit: the kernel command line says rd.unlock=0: no server to ask");
                    return ExitCode::from(3);
                }
                Err(e) => return fail(&FlowError::Config(e)),
            };
            let mut steps = Steps::new(cli.verbose);
            match crate::deposit::deposit(&config, &payload, &mut steps, started) {
                Ok(done) => {
                    for (role, how) in &done.roles {
                        say(&format!("deposit: {role}: enrolled, admitted by {how}"));
                    }
                    say(&format!("auto-enrolled: agent {}", done.agent_id));
                    ExitCode::from(EXIT_UNLOCKED)
                }
                Err(e) => fail(&e),
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
        #[cfg(not(feature = "provider"))]
        Some(Command::Provider(_)) => {
            say("provider: this initrd-agent was built without host provider mode (the initramfs build, `make agent-static`, leaves it out); on the host use `cargo build --release -p initrd-agent`");
            ExitCode::from(2)
        }
        #[cfg(feature = "provider")]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Cli {
        match Cli::try_parse_from(args.iter().copied()).unwrap() {
            Parsed::Run(cli) => cli,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn global_options_before_or_after_the_command() {
        let cli = run_args(&[]);
        assert!(cli.command.is_none() && !cli.verbose && cli.config.is_none());
        let cli = run_args(&["--verbose"]);
        assert!(cli.verbose);
        let cli = run_args(&["latch", "-c", "/etc/x.toml", "--cmdline-file=/tmp/c"]);
        assert!(matches!(cli.command, Some(Command::Latch)));
        assert_eq!(cli.config, Some(PathBuf::from("/etc/x.toml")));
        assert_eq!(cli.cmdline_file, Some(PathBuf::from("/tmp/c")));
        let cli = run_args(&["--config", "a.toml", "ek", "--out", "ek.pub", "-v"]);
        assert!(cli.verbose);
        assert!(matches!(cli.command, Some(Command::Ek { out }) if out == Path::new("ek.pub")));
        let cli = run_args(&["evidence", "--out=e.json"]);
        assert!(
            matches!(cli.command, Some(Command::Evidence { out }) if out == Path::new("e.json"))
        );
    }

    #[test]
    fn provider_options_and_defaults() {
        let Some(Command::Provider(p)) = run_args(&["provider"]).command else {
            panic!("not provider");
        };
        assert_eq!(p.listen, "127.0.0.1:8450".parse().unwrap());
        assert_eq!((p.window_ms, p.max_batch), (50, 1000));
        assert_eq!((p.max_pending, p.max_connections), (20_000, 4096));
        assert_eq!(p.pcrs, "sha256:0-7");
        let cli = run_args(&[
            "provider",
            "--listen",
            "0.0.0.0:9000",
            "--max-batch=1",
            "--pcrs",
            "sha256:0-7,14",
            "--no-event-log",
            "--server",
            "https://s",
            "--token-file",
            "t",
            "--ca",
            "ca.pem",
        ]);
        let Some(Command::Provider(p)) = cli.command else {
            panic!("not provider");
        };
        assert_eq!(p.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(p.max_batch, 1);
        assert!(p.no_event_log);
        assert_eq!(p.server.as_deref(), Some("https://s"));
        assert_eq!(p.ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn malformed_command_lines_are_refused() {
        for bad in [
            &["bogus"][..],
            &["--nope"],
            &["ek"],
            &["evidence", "--out"],
            &["latch", "--out", "x"],
            &["unlock", "extra"],
            &["provider", "--max-batch", "0"],
            &["provider", "--max-batch", "65537"],
            &["provider", "--listen", "nowhere"],
            &["provider", "--token-file", "t"],
            &["provider", "--window-ms", "1", "--window-ms", "2"],
            &["provider", "--what"],
        ] {
            assert!(Cli::try_parse_from(bad.iter().copied()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn help_and_version() {
        let Parsed::Help(h) = Cli::try_parse_from(["--help"]).unwrap() else {
            panic!("no help");
        };
        assert!(h.contains("COMMANDS:") && h.contains("EXIT CODES:"));
        let Parsed::Help(h) = Cli::try_parse_from(["provider", "-h"]).unwrap() else {
            panic!("no help");
        };
        assert!(h.contains("--max-batch"));
        assert!(matches!(
            Cli::try_parse_from(["-V"]).unwrap(),
            Parsed::Version
        ));
    }
}

/// `request-allow`'s flags as they are read.
#[derive(Debug, Default)]
struct AllowFlags {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    efi_apps: Vec<PathBuf>,
    boot_path: Option<crate::allow::BootPathArg>,
    qemu_memory_mib: Option<u64>,
    note: Option<String>,
}

impl AllowFlags {
    fn flag(
        &mut self,
        f: &str,
        value: &mut dyn FnMut(&str) -> Result<String, UsageError>,
    ) -> Result<(), UsageError> {
        fn once<T>(slot: &mut Option<T>, f: &str, v: T) -> Result<(), UsageError> {
            if slot.replace(v).is_some() {
                return Err(usage(format!("{f} given twice")));
            }
            Ok(())
        }
        match f {
            "--kernel" => once(&mut self.kernel, f, PathBuf::from(value("FILE")?)),
            "--initrd" => once(&mut self.initrd, f, PathBuf::from(value("FILE")?)),
            "--cmdline" => once(&mut self.cmdline, f, value("TEXT")?),
            "--efi-app" => {
                self.efi_apps.push(PathBuf::from(value("FILE")?));
                Ok(())
            }
            "--boot-path" => {
                let v = value("efi-stub|grub|qemu-direct|uki")?;
                let p = crate::allow::BootPathArg::parse(&v).ok_or_else(|| {
                    usage(format!(
                        "--boot-path {v:?}: one of efi-stub, grub, qemu-direct, uki"
                    ))
                })?;
                once(&mut self.boot_path, f, p)
            }
            "--qemu-memory-mib" => {
                let v = value("MiB")?;
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (64..=1 << 20).contains(n))
                    .ok_or_else(|| usage(format!("--qemu-memory-mib {v:?}: 64 to 1048576")))?;
                once(&mut self.qemu_memory_mib, f, n)
            }
            "--note" => once(&mut self.note, f, value("TEXT")?),
            other => Err(usage(format!("request-allow: unknown option {other}"))),
        }
    }

    fn finish(self) -> Result<crate::allow::AllowArgs, UsageError> {
        Ok(crate::allow::AllowArgs {
            kernel: self
                .kernel
                .ok_or_else(|| usage("request-allow needs --kernel FILE"))?,
            initrd: self.initrd,
            cmdline: self.cmdline,
            efi_apps: self.efi_apps,
            boot_path: self.boot_path.unwrap_or(crate::allow::BootPathArg::EfiStub),
            qemu_memory_mib: self.qemu_memory_mib.unwrap_or(768),
            note: self.note.unwrap_or_default(),
        })
    }
}
