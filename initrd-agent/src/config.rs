//! The agent's configuration: a TOML file installed into the initramfs by the dracut module,
//! overlaid by `rd.unlock.*` kernel command line parameters (the operator's way to change a
//! machine's behaviour without rebuilding its initramfs).
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `rd.unlock.server=` (which sets
//! both role URLs), then `rd.unlock.verifier=` / `rd.unlock.tenant=` and the other
//! parameters. The key file's default follows the first LUKS volume on the command line
//! (`rd.luks.uuid=` / `rd.luks.name=`, see [`luks_volume`]) unless the file or
//! `rd.unlock.keyfile=` sets it. `rd.unlock=0` is checked before anything else is read, so a broken config file
//! can always be bypassed from the boot loader.
//!
//! Bad values are refused with the parameter and the rule named; an unknown `rd.unlock.*`
//! parameter or TOML key is an error too, since a typo would otherwise silently keep a
//! default (say, the wrong server).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::tpm::EkKind;
use verifier_core::proto::v1::EvidenceKind;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/initrd-agent/config.toml";
/// Default CA bundle for the server's TLS certificate.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/initrd-agent/ca.pem";
/// Default TCTI: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Default VCEK certificate of an `snp-vtpm` machine (DER, from Azure's instance metadata
/// THIM endpoint or AMD's KDS, put in the initramfs by the operator).
pub const DEFAULT_VCEK_FILE: &str = "/etc/initrd-agent/vcek.der";
/// Where systemd-cryptsetup looks for `<volume>.key` when a volume has no key file
/// configured.
pub const KEYS_DIR: &str = "/run/cryptsetup-keys.d";
/// Key file when neither the config, `rd.unlock.keyfile=` nor a `rd.luks.uuid=` /
/// `rd.luks.name=` on the command line names the volume (a volume named `root`).
pub const DEFAULT_KEY_FILE: &str = "/run/cryptsetup-keys.d/root.key";
/// Default overall budget in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default per-request deadline in seconds.
pub const DEFAULT_STEP_TIMEOUT_SECS: u64 = 10;
/// Default retries per request (connection errors and 5xx only).
pub const DEFAULT_RETRIES: u32 = 3;
/// Default release PCR (DESIGN section 2, step 5): the one the policies learned by
/// `unlockctl policy learn` require at its initial value.
pub use verifier_core::DEFAULT_RELEASE_PCR;
/// Default UEFI event log location.
pub const DEFAULT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Default IMA list location.
pub const DEFAULT_IMA_LOG: &str = "/sys/kernel/security/ima/binary_runtime_measurements";

/// Largest overall budget accepted (an hour: beyond that the boot is stuck anyway).
const MAX_TIMEOUT_SECS: u64 = 3600;
/// Most retries accepted per request.
const MAX_RETRIES: u32 = 10;

/// The configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file (or the command line file) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML file does not parse or has an unknown key or a wrongly typed value.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The TOML parser's description.
        message: String,
    },
    /// A kernel command line parameter has a value that cannot be used.
    #[error("kernel command line {param}={value:?}: {reason}")]
    Cmdline {
        /// The parameter.
        param: String,
        /// Its value.
        value: String,
        /// The rule broken.
        reason: &'static str,
    },
    /// An `rd.unlock.*` parameter this agent does not know.
    #[error(
        "unknown kernel command line parameter {0:?} (known: rd.unlock, rd.unlock.server, \
         rd.unlock.verifier, rd.unlock.tenant, rd.unlock.timeout, rd.unlock.keyfile, \
         rd.unlock.tcti, rd.unlock.ek, rd.unlock.insecure)"
    )]
    UnknownParameter(String),
    /// A required setting is missing.
    #[error("{field} is not configured: {hint}")]
    Missing {
        /// The setting (TOML key).
        field: &'static str,
        /// How to set it.
        hint: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("{field} = {value:?}: {reason}")]
    Invalid {
        /// The setting (TOML key).
        field: &'static str,
        /// Its value.
        value: String,
        /// The rule broken.
        reason: &'static str,
    },
}

/// What the agent should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// `rd.unlock=0`: step aside.
    Skip,
    /// Unlock with this configuration.
    Run(Box<Config>),
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL of the verifier role (no trailing slash); requests go to `{base}/v1/...`.
    pub verifier_url: String,
    /// Base URL of the tenant role (no trailing slash).
    pub tenant_url: String,
    /// PEM file of the CAs trusted for the servers' TLS certificates.
    pub ca_bundle: PathBuf,
    /// TCTI configuration string.
    pub tcti: String,
    /// Which EK template to instantiate; its public key is the agent's identity.
    pub ek: EkKind,
    /// Where the released key is written.
    pub key_file: PathBuf,
    /// Overall budget for the whole unlock.
    pub timeout: Duration,
    /// Deadline of one HTTP request (connect to body read).
    pub step_timeout: Duration,
    /// Retries per request after the first attempt (connection errors and 5xx only).
    pub retries: u32,
    /// PCR extended after a release.
    pub release_pcr: u8,
    /// UEFI event log file.
    pub event_log: PathBuf,
    /// IMA measurement list file.
    pub ima_log: PathBuf,
    /// Allow `http://` URLs (tests only: the halves are sealed to NK, but the requests and
    /// refusals would travel in the clear and unauthenticated).
    pub insecure_http: bool,
    /// How the AK is trusted: `tpm` (EK certificate and MakeCredential, the AK derived by
    /// the agent) or `snp-vtpm` (an Azure SEV-SNP confidential VM: the vTPM's own AK at
    /// `0x81000003`, vouched for by the HCL report the agent reads from NV and sends).
    pub evidence: EvidenceKind,
    /// The chip's VCEK certificate (DER), sent with the HCL report (`snp-vtpm` only).
    pub vcek_file: PathBuf,
    /// The IAK path: when set, the AK is the OEM-provisioned IAK and registration sends its
    /// certificate (no MakeCredential, no activation round).
    pub iak: Option<IakConfig>,
}

/// Where the device's IAK and its certificate are (TOML keys `iak_handle`, `iak_cert`; not
/// on the kernel command line: they are a property of the machine, set once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IakConfig {
    /// Persistent handle where the OEM (or the operator's provisioning) put the IAK.
    pub handle: u32,
    /// The IAK certificate, DER or PEM; in PEM, the first block is the IAK certificate and
    /// any further blocks are intermediates sent with it.
    pub cert: PathBuf,
}

/// The TOML file's schema. Every key is optional; see the `--help` text for meanings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    verifier_url: Option<String>,
    tenant_url: Option<String>,
    ca_bundle: Option<PathBuf>,
    tcti: Option<String>,
    ek: Option<String>,
    key_file: Option<PathBuf>,
    timeout_secs: Option<u64>,
    step_timeout_secs: Option<u64>,
    retries: Option<u32>,
    release_pcr: Option<u8>,
    event_log: Option<PathBuf>,
    ima_log: Option<PathBuf>,
    insecure_http: Option<bool>,
    iak_handle: Option<u32>,
    iak_cert: Option<PathBuf>,
    evidence: Option<String>,
    vcek_file: Option<PathBuf>,
}

/// Where the TOML file comes from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The path.
    pub path: PathBuf,
    /// Given with `--config`: then a missing file is an error. The default path may be
    /// absent when the kernel command line carries everything.
    pub explicit: bool,
}

impl Default for ConfigSource {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_CONFIG_PATH),
            explicit: false,
        }
    }
}

/// Reads the config file and overlays `cmdline` (the contents of `/proc/cmdline`).
pub fn load(source: &ConfigSource, cmdline: &str) -> Result<Loaded, ConfigError> {
    let params = parse_cmdline(cmdline)?;
    if params.skip {
        return Ok(Loaded::Skip);
    }
    let file = read_file(source)?;
    build(file, params).map(|c| Loaded::Run(Box::new(c)))
}

/// The settings that only concern this machine (TPM and logs), for `evidence`, which talks
/// to no server and so needs no URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// TCTI configuration string.
    pub tcti: String,
    /// EK template.
    pub ek: EkKind,
    /// UEFI event log file.
    pub event_log: PathBuf,
    /// IMA measurement list file.
    pub ima_log: PathBuf,
    /// PCR extended after a release (and by `latch`).
    pub release_pcr: u8,
}

/// Like [`load`] but for the local settings only: no URL is required and `rd.unlock=0` is
/// ignored (capturing evidence is an operator's explicit request, and the latch must close
/// the release PCR whether or not the agent ran).
pub fn load_local(source: &ConfigSource, cmdline: &str) -> Result<LocalConfig, ConfigError> {
    let params = parse_cmdline(cmdline)?;
    let file = read_file(source)?;
    let release_pcr = release_pcr(file.release_pcr)?;
    let ek = match (params.ek, file.ek) {
        (Some(v), _) => parse_ek("rd.unlock.ek", &v)?,
        (None, Some(v)) => parse_ek("ek", &v)?,
        (None, None) => EkKind::EccP256,
    };
    Ok(LocalConfig {
        tcti: params
            .tcti
            .or(file.tcti)
            .unwrap_or_else(|| DEFAULT_TCTI.to_owned()),
        ek,
        event_log: file
            .event_log
            .unwrap_or_else(|| PathBuf::from(DEFAULT_EVENT_LOG)),
        ima_log: file
            .ima_log
            .unwrap_or_else(|| PathBuf::from(DEFAULT_IMA_LOG)),
        release_pcr,
    })
}

/// The release PCR of the file (the one place it is read, for the agent and the latch).
fn release_pcr(configured: Option<u8>) -> Result<u8, ConfigError> {
    let release_pcr = configured.unwrap_or(DEFAULT_RELEASE_PCR);
    if release_pcr >= verifier_core::wire::PCR_COUNT {
        return Err(ConfigError::Invalid {
            field: "release_pcr",
            value: release_pcr.to_string(),
            reason: "must be a PCR index between 0 and 23",
        });
    }
    Ok(release_pcr)
}

fn read_file(source: &ConfigSource) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(&source.path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !source.explicit => {
            return Ok(FileConfig::default())
        }
        Err(e) => {
            return Err(ConfigError::Read {
                path: source.path.clone(),
                source: e,
            })
        }
    };
    toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Toml {
        path: source.path.clone(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// Parses a TOML text and a command line without touching the file system (for tests and
/// for `--check`-style tooling).
pub fn parse(toml_text: &str, cmdline: &str) -> Result<Loaded, ConfigError> {
    let params = parse_cmdline(cmdline)?;
    if params.skip {
        return Ok(Loaded::Skip);
    }
    let file = toml::from_str::<FileConfig>(toml_text).map_err(|e| ConfigError::Toml {
        path: PathBuf::from("<config>"),
        message: e.to_string().trim_end().to_owned(),
    })?;
    build(file, params).map(|c| Loaded::Run(Box::new(c)))
}

/// The `rd.unlock.*` parameters found on a command line (last occurrence wins, as for the
/// kernel's own parameters).
#[derive(Debug, Default)]
struct CmdlineParams {
    skip: bool,
    server: Option<String>,
    verifier: Option<String>,
    tenant: Option<String>,
    timeout_secs: Option<u64>,
    key_file: Option<PathBuf>,
    tcti: Option<String>,
    ek: Option<String>,
    insecure: Option<bool>,
    /// The first LUKS volume named by `rd.luks.uuid=` / `rd.luks.name=` (or their `luks.*`
    /// forms), as systemd-cryptsetup-generator names it.
    luks_volume: Option<String>,
}

/// Splits a kernel command line into parameters: whitespace separates, double quotes group
/// (and are removed), as the kernel's own parser does.
pub fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                any = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The volume name systemd-cryptsetup-generator gives the first LUKS volume on the command
/// line: `rd.luks.name=<uuid>=<name>` names it `<name>`, `rd.luks.uuid=<uuid>` (a leading
/// `luks-` is ignored, as the generator does) names it `luks-<uuid>` unless a
/// `rd.luks.name` gives that UUID a name. The non-`rd.` forms count too (the generator
/// reads both in the initrd). systemd-cryptsetup reads the volume's key from
/// `/run/cryptsetup-keys.d/<name>.key` when no key file is configured for it.
pub fn luks_volume(cmdline: &str) -> Option<String> {
    let tokens = split_cmdline(cmdline);
    let value = |t: &str, keys: &[&str]| {
        keys.iter()
            .find_map(|k| t.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::to_owned)
    };
    let names: Vec<(String, String)> = tokens
        .iter()
        .filter_map(|t| value(t, &["rd.luks.name", "luks.name"]))
        .filter_map(|v| {
            let (uuid, name) = v.split_once('=')?;
            let uuid = uuid.strip_prefix("luks-").unwrap_or(uuid);
            Some((uuid.to_owned(), name.to_owned()))
        })
        .collect();
    let first = tokens.iter().find_map(|t| {
        if let Some(v) = value(t, &["rd.luks.uuid", "luks.uuid"]) {
            let uuid = v.strip_prefix("luks-").unwrap_or(&v).to_owned();
            let named = names
                .iter()
                .find(|(u, _)| *u == uuid)
                .map(|(_, n)| n.clone());
            return Some(named.unwrap_or_else(|| format!("luks-{uuid}")));
        }
        let v = value(t, &["rd.luks.name", "luks.name"])?;
        v.split_once('=').map(|(_, name)| name.to_owned())
    })?;
    // The name becomes a file name: refuse anything that could leave the directory.
    let safe = !first.is_empty()
        && first != "."
        && first != ".."
        && !first.contains(['/', '\0'])
        && !first.chars().any(char::is_control);
    safe.then_some(first)
}

fn parse_cmdline(cmdline: &str) -> Result<CmdlineParams, ConfigError> {
    let mut p = CmdlineParams {
        luks_volume: luks_volume(cmdline),
        ..CmdlineParams::default()
    };
    for token in split_cmdline(cmdline) {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (token.clone(), String::new()),
        };
        if key != "rd.unlock" && !key.starts_with("rd.unlock.") {
            continue;
        }
        let bad = |reason| ConfigError::Cmdline {
            param: key.clone(),
            value: value.clone(),
            reason,
        };
        let non_empty = |v: &str| {
            if v.is_empty() {
                Err(bad("needs a value"))
            } else {
                Ok(v.to_owned())
            }
        };
        match key.as_str() {
            "rd.unlock" => p.skip = !parse_flag(&value).ok_or_else(|| bad("must be 0 or 1"))?,
            "rd.unlock.server" => p.server = Some(non_empty(&value)?),
            "rd.unlock.verifier" => p.verifier = Some(non_empty(&value)?),
            "rd.unlock.tenant" => p.tenant = Some(non_empty(&value)?),
            "rd.unlock.timeout" => {
                p.timeout_secs = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad("must be a whole number of seconds"))?,
                )
            }
            "rd.unlock.keyfile" => p.key_file = Some(PathBuf::from(non_empty(&value)?)),
            "rd.unlock.tcti" => p.tcti = Some(non_empty(&value)?),
            "rd.unlock.ek" => p.ek = Some(non_empty(&value)?),
            "rd.unlock.insecure" => {
                p.insecure = Some(parse_flag(&value).ok_or_else(|| bad("must be 0 or 1"))?)
            }
            _ => return Err(ConfigError::UnknownParameter(key)),
        }
    }
    Ok(p)
}

fn parse_flag(v: &str) -> Option<bool> {
    match v {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

fn parse_ek(field: &'static str, v: &str) -> Result<EkKind, ConfigError> {
    match v {
        "ecc" => Ok(EkKind::EccP256),
        "rsa" => Ok(EkKind::Rsa2048),
        "ecc-p384" => Ok(EkKind::EccP384),
        "rsa-3072" => Ok(EkKind::Rsa3072),
        _ => Err(ConfigError::Invalid {
            field,
            value: v.to_owned(),
            reason: "must be \"ecc\" (NIST P-256 EK, template L-2), \"rsa\" (RSA-2048, L-1), \"ecc-p384\" (NIST P-384, high range H-3) or \"rsa-3072\" (RSA-3072, H-6)",
        }),
    }
}

/// Checks a base URL and strips trailing slashes.
fn base_url(field: &'static str, url: &str, insecure: bool) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::Invalid {
        field,
        value: url.to_owned(),
        reason,
    };
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        ("https://", r)
    } else if let Some(r) = url.strip_prefix("http://") {
        if !insecure {
            return Err(invalid(
                "plain http is refused; use https, or set insecure_http / rd.unlock.insecure=1 (tests only)",
            ));
        }
        ("http://", r)
    } else {
        return Err(invalid("must start with https://"));
    };
    let rest = rest.trim_end_matches('/');
    let trimmed = format!("{scheme}{rest}");
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid("has no host"));
    }
    if trimmed.contains(['?', '#']) || trimmed.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "must be a plain base URL (no query, fragment or spaces)",
        ));
    }
    Ok(trimmed)
}

fn build(file: FileConfig, cmd: CmdlineParams) -> Result<Config, ConfigError> {
    let insecure_http = cmd.insecure.or(file.insecure_http).unwrap_or(false);

    let (mut verifier, mut tenant) = (file.verifier_url, file.tenant_url);
    if let Some(server) = &cmd.server {
        let server = base_url("rd.unlock.server", server, insecure_http)?;
        verifier = Some(format!("{server}/verifier"));
        tenant = Some(format!("{server}/tenant"));
    }
    if let Some(v) = cmd.verifier {
        verifier = Some(v);
    }
    if let Some(t) = cmd.tenant {
        tenant = Some(t);
    }
    const URL_HINT: &str = "set it in the config file or pass rd.unlock.server=URL \
                            (or rd.unlock.verifier= and rd.unlock.tenant=) on the kernel command line";
    let verifier_url = base_url(
        "verifier_url",
        &verifier.ok_or(ConfigError::Missing {
            field: "verifier_url",
            hint: URL_HINT,
        })?,
        insecure_http,
    )?;
    let tenant_url = base_url(
        "tenant_url",
        &tenant.ok_or(ConfigError::Missing {
            field: "tenant_url",
            hint: URL_HINT,
        })?,
        insecure_http,
    )?;

    let ek = match (cmd.ek, file.ek) {
        (Some(v), _) => parse_ek("rd.unlock.ek", &v)?,
        (None, Some(v)) => parse_ek("ek", &v)?,
        (None, None) => EkKind::EccP256,
    };

    let timeout_secs = cmd
        .timeout_secs
        .or(file.timeout_secs)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(ConfigError::Invalid {
            field: "timeout_secs",
            value: timeout_secs.to_string(),
            reason: "must be between 1 and 3600 seconds",
        });
    }
    let step_timeout_secs = match file.step_timeout_secs {
        Some(s) if s == 0 || s > timeout_secs => {
            return Err(ConfigError::Invalid {
                field: "step_timeout_secs",
                value: s.to_string(),
                reason: "must be at least 1 and at most timeout_secs",
            })
        }
        Some(s) => s,
        None => DEFAULT_STEP_TIMEOUT_SECS.min(timeout_secs),
    };
    let retries = file.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        return Err(ConfigError::Invalid {
            field: "retries",
            value: retries.to_string(),
            reason: "must be at most 10",
        });
    }
    let release_pcr = release_pcr(file.release_pcr)?;
    let tcti = cmd
        .tcti
        .or(file.tcti)
        .unwrap_or_else(|| DEFAULT_TCTI.to_owned());
    if tcti.is_empty() {
        return Err(ConfigError::Invalid {
            field: "tcti",
            value: tcti,
            reason: "must not be empty (e.g. device:/dev/tpmrm0)",
        });
    }
    let key_file = cmd
        .key_file
        .or(file.key_file)
        .or_else(|| {
            cmd.luks_volume
                .map(|v| Path::new(KEYS_DIR).join(format!("{v}.key")))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_FILE));
    absolute("key_file", &key_file)?;
    if key_file.file_name().is_none() {
        return Err(ConfigError::Invalid {
            field: "key_file",
            value: key_file.display().to_string(),
            reason: "must name a file",
        });
    }
    let ca_bundle = file
        .ca_bundle
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_BUNDLE));
    let iak = iak(file.iak_handle, file.iak_cert)?;
    let evidence = match file.evidence.as_deref() {
        None => EvidenceKind::Tpm,
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
            field: "evidence",
            value: v.to_owned(),
            reason: "must be \"tpm\" or \"snp-vtpm\" (an Azure SEV-SNP confidential VM)",
        })?,
    };
    let vcek_file = file
        .vcek_file
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VCEK_FILE));
    Ok(Config {
        evidence,
        vcek_file,
        verifier_url,
        tenant_url,
        ca_bundle,
        tcti,
        ek,
        key_file,
        timeout: Duration::from_secs(timeout_secs),
        step_timeout: Duration::from_secs(step_timeout_secs),
        retries,
        release_pcr,
        event_log: file
            .event_log
            .unwrap_or_else(|| PathBuf::from(DEFAULT_EVENT_LOG)),
        ima_log: file
            .ima_log
            .unwrap_or_else(|| PathBuf::from(DEFAULT_IMA_LOG)),
        insecure_http,
        iak,
    })
}

/// The IAK settings: both keys or neither (a certificate without its key's handle, or the
/// reverse, is a half-configured machine, refused rather than guessed).
fn iak(handle: Option<u32>, cert: Option<PathBuf>) -> Result<Option<IakConfig>, ConfigError> {
    match (handle, cert) {
        (None, None) => Ok(None),
        (Some(handle), Some(cert)) => {
            absolute("iak_cert", &cert)?;
            if handle >> 24 != 0x81 {
                return Err(ConfigError::Invalid {
                    field: "iak_handle",
                    value: format!("{handle:#010x}"),
                    reason: "must be a persistent handle (0x81xxxxxx)",
                });
            }
            Ok(Some(IakConfig { handle, cert }))
        }
        (None, Some(_)) => Err(ConfigError::Missing {
            field: "iak_handle",
            hint: "set iak_handle (the IAK's persistent handle, e.g. 0x81020001) with iak_cert",
        }),
        (Some(_), None) => Err(ConfigError::Missing {
            field: "iak_cert",
            hint: "set iak_cert (the IAK certificate file) with iak_handle",
        }),
    }
}

fn absolute(field: &'static str, p: &Path) -> Result<(), ConfigError> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field,
            value: p.display().to_string(),
            reason: "must be an absolute path",
        })
    }
}
