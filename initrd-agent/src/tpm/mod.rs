//! The agent's only door to the TPM: endorsement key, EK certificate, attestation key,
//! PCRs, quotes and credential activation, as raw TPM 2.0 commands.
//!
//! There is no TSS underneath: the dozen commands the agent sends are marshalled and their
//! responses decoded by `verifier_core::tpm2` (bounded, fuzzed parsing of whatever the TPM
//! answers), and [`transport`] moves the bytes over `/dev/tpmrm0` or swtpm's socket. That
//! is what lets the agent be one static executable without libtss2 or libcrypto beside it.
//!
//! Everything this module hands out is plain bytes in TPM wire format (TPMT_PUBLIC,
//! TPM2B_NAME, DER), so the server can check it with `verifier-core` without trusting this
//! code. Handles stay inside: callers get [`Ek`] and [`Ak`] values that only this module can
//! use.
//!
//! Submodules: `auth` (which authorization each command uses, and why; the key templates),
//! `pcr` (reads, active banks, the release extend), `quote` (TPM2_Quote, checked locally
//! with `verifier-core`) and `transport`.

mod auth;
mod pcr;
mod quote;
pub mod transport;

pub use pcr::{full_selection, RELEASE_EVENT};
pub use quote::{Quote, QuotedPcrs};

use verifier_core::proto::v1::AgentId;
use verifier_core::tpm2::{
    self, Auth, Command, CommandCode, KeyPublic, ResponseError, RH_ENDORSEMENT, RH_OWNER,
};
use verifier_core::wire::{Public, Writer};
use zeroize::Zeroizing;

use transport::{Transport, TransportError};
/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile, low range).
pub const RSA_EK_CERT_NV_INDEX: u32 = 0x01c0_0002;
/// NV index of the ECC NIST P-256 EK certificate (TCG EK Credential Profile, low range).
pub const ECC_EK_CERT_NV_INDEX: u32 = 0x01c0_000a;
/// Smallest TPM2_PT_NV_BUFFER_MAX the PC Client profile allows; used when the TPM does
/// not report its own.
const MIN_NV_BUFFER_MAX: usize = 512;

/// NV index of the ECC NIST P-384 EK certificate (TCG EK Credential Profile, high range;
/// where swtpm_setup puts its ECC EK certificate).
pub const ECC_P384_EK_CERT_NV_INDEX: u32 = 0x01c0_0016;

/// The persistent handle where the agent keeps its AK (TPM2_EvictControl at first
/// registration): in the range the TCG Handle Registry gives to endorsement-hierarchy
/// primary objects (0x81010000-0x8101FFFF), away from the EK handles 0x81010001/0x81010002
/// and swtpm's 0x81010016. A boot that finds its AK here only reads it back (no key
/// derivation); when it is absent or holds anything else, the AK is derived again from the
/// endorsement seed (CreatePrimary with the same template gives the same key).
pub const AK_PERSISTENT_HANDLE: u32 = 0x8101_0020;

/// The NV index holding the HCL report on Azure confidential VMs (the paravisor writes it
/// at vTPM boot). Source: Microsoft's "Leverage virtual TPMs in Azure confidential VMs"
/// (`tpm2_nvread -C o 0x01400001`) and its guest attestation samples (`HCL_REPORT_INDEX`).
pub const HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;

/// The persistent handle of the vTPM's attestation key on Azure confidential VMs, the key
/// whose public part the HCL report's runtime data carries as `HCLAkPub`. Source: the same
/// samples (`AIK_PUB_INDEX`) and the `az-cvm-vtpm` crate (`VTPM_AK_HANDLE`).
pub const VTPM_AK_HANDLE: u32 = 0x8100_0003;

/// Which hierarchy a primary AK is derived in. The agent only ever uses the endorsement
/// hierarchy; the owner hierarchy exists so tests can make the AK a server must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkHierarchy {
    /// The endorsement hierarchy: quote clockInfo is not obfuscated, and the key survives
    /// TPM2_Clear (it changes only with the endorsement seed).
    Endorsement,
    /// The owner (storage) hierarchy: for tests of the server's refusal.
    Owner,
}

/// NV index of the RSA-3072 EK certificate (TCG EK Credential Profile, high range; where
/// swtpm_setup `--rsa-keysize 3072` puts it).
pub const RSA3072_EK_CERT_NV_INDEX: u32 = 0x01c0_001c;

/// First NV index of the EK certificate chain (TCG EK Credential Profile: the CA
/// certificates between the EK certificate and the root, DER, one or more per index, in
/// consecutive indices from here up to 0x01c001ff).
pub const EK_CHAIN_FIRST_NV_INDEX: u32 = 0x01c0_0100;
/// Chain indices read at most (real chains have one or two CAs below the root).
const EK_CHAIN_MAX_INDICES: u32 = 4;
/// Largest chain index read (a certificate is 1-2 KiB; this is a few of them).
const EK_CHAIN_MAX_INDEX_BYTES: usize = 8 * 1024;

/// Which default EK template (TCG EK Credential Profile) to instantiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkKind {
    /// RSA 2048, SHA-256 name, AES-128-CFB (template L-1).
    Rsa2048,
    /// ECC NIST P-256, SHA-256 name, AES-128-CFB (template L-2).
    EccP256,
    /// ECC NIST P-384, SHA-384 name, AES-256-CFB (high range template H-3). Its authPolicy
    /// is PolicyOR(PolicySecret(endorsement), PolicyNV), satisfied through the first branch.
    EccP384,
    /// RSA 3072, SHA-384 name, AES-256-CFB (high range template H-6), with the same
    /// SHA-384 authPolicy as H-3.
    Rsa3072,
}

impl EkKind {
    /// NV index where manufacturers store this EK's certificate.
    pub fn cert_nv_index(self) -> u32 {
        match self {
            Self::Rsa2048 => RSA_EK_CERT_NV_INDEX,
            Self::EccP256 => ECC_EK_CERT_NV_INDEX,
            Self::EccP384 => ECC_P384_EK_CERT_NV_INDEX,
            Self::Rsa3072 => RSA3072_EK_CERT_NV_INDEX,
        }
    }

    /// A high-range template: SHA-384 name and policy session, PolicyOR in the policy.
    pub fn high_range(self) -> bool {
        matches!(self, Self::EccP384 | Self::Rsa3072)
    }

    /// The configuration name (`ek = "..."`, `rd.unlock.ek=`).
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa",
            Self::EccP256 => "ecc",
            Self::EccP384 => "ecc-p384",
            Self::Rsa3072 => "rsa-3072",
        }
    }
}

/// A TPM operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string could not be parsed or the TPM could not be reached.
    #[error("cannot open the TPM through TCTI {tcti:?}: {source}")]
    Open {
        /// The TCTI configuration string.
        tcti: String,
        /// What went wrong.
        source: TransportError,
    },
    /// A command could not be sent or its response not received.
    #[error("TPM {op}: {source}")]
    Transport {
        /// The command.
        op: &'static str,
        /// What went wrong.
        source: TransportError,
    },
    /// The TPM refused a command, or answered with bytes that are not a valid response.
    #[error("TPM {op} failed: {source}")]
    Command {
        /// The operation that failed (for the person reading the console).
        op: &'static str,
        /// The response code or what is wrong with the response.
        source: ResponseError,
    },
    /// The operation is not implemented for this EK template.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A PCR index outside 0-23 (or one the TPM reported twice).
    #[error("PCR index {0} is not a PC Client PCR (0-23) or was reported twice")]
    PcrIndex(u8),
    /// A bank asked for is not allocated in this TPM.
    #[error("the TPM has no active PCR bank {}", .0.map_or("at all", |a| a.name()))]
    BankNotActive(Option<verifier_core::wire::HashAlg>),
    /// The TPM returned something inconsistent.
    #[error("TPM {what} returned unusable output: {reason}")]
    BadOutput {
        /// The command.
        what: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// What the TPM returned does not parse with verifier-core (so the server would
    /// refuse it too).
    #[error("TPM output does not parse with verifier-core: {0}")]
    Remarshal(verifier_core::ParseError),
    /// Our own AK does not pass the server's AK checks.
    #[error("the AK does not pass verifier-core's AK checks: {0}")]
    AkRefused(#[source] verifier_core::quote::AkError),
    /// The quote does not verify locally against the PCR values read after it.
    #[error("the TPM's quote does not verify locally: {0}")]
    QuoteCheck(#[source] verifier_core::quote::VerifyError),
    /// A credential blob or secret from the server does not fit the TPM's buffer types.
    #[error("{field} from the server is malformed: {reason}")]
    BadInput {
        /// TPM structure name.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// How many times one command is sent while the TPM answers "retry".
const MAX_TPM_RETRIES: u32 = 5;

/// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: warnings that mean "send it again".
fn is_retry(rc: u32) -> bool {
    matches!(rc, 0x922 | 0x908 | 0x90a)
}

fn cmd(op: &'static str) -> impl FnOnce(ResponseError) -> TpmError {
    move |source| TpmError::Command { op, source }
}

/// An endorsement key loaded in the TPM.
#[derive(Debug)]
pub struct Ek {
    handle: u32,
    kind: EkKind,
    public: Vec<u8>,
}

impl Ek {
    /// The EK's TPMT_PUBLIC as marshalled by the TPM (no size prefix).
    pub fn public(&self) -> &[u8] {
        &self.public
    }
    /// Which template it was created from.
    pub fn kind(&self) -> EkKind {
        self.kind
    }
}

impl EkKind {
    /// The persistent handle the TCG EK Credential Profile (and swtpm_setup) gives this EK.
    pub fn persistent_handle(self) -> u32 {
        match self {
            Self::Rsa2048 => 0x8101_0001,
            Self::EccP256 => 0x8101_0002,
            Self::EccP384 => 0x8101_0016,
            Self::Rsa3072 => 0x8101_001c,
        }
    }
}

/// An attestation key (ECC P-256, ECDSA-SHA256, restricted signing), loaded or persistent.
#[derive(Debug)]
pub struct Ak {
    handle: u32,
    public: Vec<u8>,
    name: Vec<u8>,
    /// Read back from a persistent handle (never flushed).
    persistent: bool,
}

impl Ak {
    /// The AK's TPMT_PUBLIC (no size prefix).
    pub fn public(&self) -> &[u8] {
        &self.public
    }
    /// The AK's name (TPM2B_NAME contents: nameAlg || digest) as the TPM computes it.
    pub fn name(&self) -> &[u8] {
        &self.name
    }
}

/// A connection to the TPM.
#[derive(Debug)]
pub struct Tpm {
    transport: Transport,
    /// TPM commands sent through this connection (the boot path prints it in debug mode).
    commands: u32,
}

/// TPM2B_SENSITIVE_CREATE with an empty userAuth and no data: every key the agent makes
/// has the empty authValue (see `auth`).
const EMPTY_SENSITIVE_CREATE: [u8; 6] = [0x00, 0x04, 0x00, 0x00, 0x00, 0x00];

impl Tpm {
    /// TPM commands sent so far through this connection.
    pub fn commands(&self) -> u32 {
        self.commands
    }

    /// Connects through a TCTI configuration string such as `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321`.
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        let transport = Transport::open(tcti).map_err(|source| TpmError::Open {
            tcti: tcti.to_owned(),
            source,
        })?;
        Ok(Self {
            transport,
            commands: 0,
        })
    }

    /// Sends `command`, checks the response header and hands the handle and parameter
    /// area to `decode`. A TPM error code or a malformed response is [`TpmError::Command`]
    /// naming `op`.
    fn run<T>(
        &mut self,
        op: &'static str,
        command: &Command,
        decode: impl FnOnce(Option<u32>, &[u8]) -> Result<T, ResponseError>,
    ) -> Result<T, TpmError> {
        let bytes = command.marshal();
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.commands = self.commands.saturating_add(1);
            let response = self
                .transport
                .transact(&bytes)
                .map_err(|source| TpmError::Transport { op, source })?;
            match tpm2::Response::parse(&response, command.code(), command.has_sessions()) {
                // The TPM did not start the command and asks for it again (libtpms answers
                // TPM_RC_RETRY to a first signature with a persistent RSA key): the same
                // bytes again, a bounded number of times.
                Err(ResponseError::Code(rc)) if is_retry(rc) && attempts < MAX_TPM_RETRIES => {
                    continue
                }
                parsed => {
                    let parsed = parsed.map_err(cmd(op))?;
                    return decode(parsed.handle, parsed.params).map_err(cmd(op));
                }
            }
        }
    }

    /// TPM2_CreatePrimary of `template` in `hierarchy` with the empty password; returns the
    /// handle, public area and name.
    fn create_primary(
        &mut self,
        op: &'static str,
        hierarchy: u32,
        template: &[u8],
    ) -> Result<(u32, KeyPublic), TpmError> {
        let mut c = Command::new(CommandCode::CreatePrimary)
            .handle(hierarchy)
            .auth(Auth::password());
        c.params()
            .bytes(&EMPTY_SENSITIVE_CREATE)
            .tpm2b(template)
            .tpm2b(&[])
            .u32(0);
        let (handle, key) = self.run(op, &c, |h, p| {
            let key = tpm2::create_primary_response(p)?;
            Ok((h, key))
        })?;
        let handle = handle.ok_or(TpmError::BadOutput {
            what: op,
            reason: "no object handle",
        })?;
        Ok((handle, key))
    }

    /// Creates the EK from the default template of `kind` (deterministic: the same TPM
    /// always yields the same key, which is what the EK certificate certifies).
    pub fn create_ek(&mut self, kind: EkKind) -> Result<Ek, TpmError> {
        let template = auth::ek_template(kind);
        // CreatePrimary returns the public area: no ReadPublic round trip.
        let (handle, key) = self.create_primary("CreatePrimary (EK)", RH_ENDORSEMENT, &template)?;
        Ok(Ek {
            handle,
            kind,
            public: key.public,
        })
    }

    /// TPM2_ReadPublic of `handle`, or `None` when there is no object there.
    fn read_public(&mut self, handle: u32) -> Result<Option<KeyPublic>, TpmError> {
        let c = Command::new(CommandCode::ReadPublic).handle(handle);
        match self.run("ReadPublic", &c, |_, p| tpm2::read_public_response(p)) {
            Ok(k) => Ok(Some(k)),
            Err(TpmError::Command { source, .. }) if source.is_missing_handle() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The TPM's TPM_PT_NV_BUFFER_MAX, or the PC Client minimum when it reports none.
    fn nv_buffer_max(&mut self) -> usize {
        let mut c = Command::new(CommandCode::GetCapability);
        c.params()
            .u32(tpm2::CAP_TPM_PROPERTIES)
            .u32(tpm2::PT_NV_BUFFER_MAX)
            .u32(1);
        self.run("GetCapability (NV buffer size)", &c, |_, p| {
            tpm2::tpm_property_response(p, tpm2::PT_NV_BUFFER_MAX)
        })
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(MIN_NV_BUFFER_MAX)
        .min(tpm2::MAX_NV_BUFFER_SIZE)
    }

    /// Reads the EK certificate (DER) from its NV index, or `None` when the TPM has none.
    pub fn read_ek_cert(&mut self, kind: EkKind) -> Result<Option<Vec<u8>>, TpmError> {
        let index = kind.cert_nv_index();
        self.read_nv(
            index,
            index,
            usize::MAX,
            ("NV_ReadPublic (EK certificate)", "NV_Read (EK certificate)"),
        )
    }

    /// Reads the EK certificate chain from the chain NV indices (consecutive from
    /// [`EK_CHAIN_FIRST_NV_INDEX`], stopping at the first undefined one): each index holds
    /// one or more DER certificates back to back. Empty when the TPM has none. The bytes
    /// are only split here; the server parses and checks them.
    pub fn read_ek_chain(&mut self) -> Result<Vec<Vec<u8>>, TpmError> {
        let mut certs = Vec::new();
        for i in 0..EK_CHAIN_MAX_INDICES {
            let index = EK_CHAIN_FIRST_NV_INDEX + i;
            let Some(bytes) = self.read_nv(
                index,
                index,
                EK_CHAIN_MAX_INDEX_BYTES,
                (
                    "NV_ReadPublic (EK certificate chain)",
                    "NV_Read (EK certificate chain)",
                ),
            )?
            else {
                break;
            };
            for der in tpm2::split_der_values(&bytes).ok_or(TpmError::BadOutput {
                what: "NV_Read (EK certificate chain)",
                reason: "the index does not hold DER certificates back to back",
            })? {
                certs.push(der.to_vec());
            }
        }
        certs.truncate(verifier_core::proto::v1::MAX_EK_CHAIN);
        Ok(certs)
    }

    /// Reads an Azure confidential VM's HCL report (header, SNP report, runtime data) from
    /// the vTPM's NV index [`HCL_REPORT_NV_INDEX`], with owner authorization (empty), as
    /// Azure's guest attestation tools do; `None` when the index does not exist (not an
    /// Azure CVM). The agent does not parse it: the server verifies it.
    pub fn read_hcl_report(&mut self) -> Result<Option<Vec<u8>>, TpmError> {
        self.read_nv(
            HCL_REPORT_NV_INDEX,
            RH_OWNER,
            verifier_core::proto::v1::MAX_HCL_REPORT,
            ("NV_ReadPublic (HCL report)", "NV_Read (HCL report)"),
        )
    }

    /// The vTPM's AK at [`VTPM_AK_HANDLE`] (made by the Azure paravisor, named in the HCL
    /// report), if there is a key there. Never flushed.
    pub fn vtpm_ak(&mut self) -> Result<Option<Ak>, TpmError> {
        Ok(self.read_public(VTPM_AK_HANDLE)?.map(|k| Ak {
            handle: VTPM_AK_HANDLE,
            public: k.public,
            name: k.name,
            persistent: true,
        }))
    }

    /// Reads a whole NV index in chunks of the TPM's NV buffer size, authorizing with
    /// `auth` (the index itself or the owner, password empty); `None` when the index does
    /// not exist; an index larger than `max` bytes is refused before reading.
    fn read_nv(
        &mut self,
        index: u32,
        auth: u32,
        max: usize,
        (what_public, what_read): (&'static str, &'static str),
    ) -> Result<Option<Vec<u8>>, TpmError> {
        let c = Command::new(CommandCode::NvReadPublic).handle(index);
        let size = match self.run(what_public, &c, |_, p| {
            tpm2::nv_read_public_response(p, index)
        }) {
            Ok(size) => usize::from(size),
            // No such index (a TPM provisioned without a certificate; not an Azure CVM).
            Err(TpmError::Command { source, .. }) if source.is_missing_handle() => return Ok(None),
            Err(e) => return Err(e),
        };
        if size > max {
            return Err(TpmError::BadOutput {
                what: what_public,
                reason: "the index is larger than what it may hold",
            });
        }
        let chunk = self.nv_buffer_max();
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            let len = chunk.min(size - data.len());
            let (len16, offset) = match (u16::try_from(len), u16::try_from(data.len())) {
                (Ok(l), Ok(o)) => (l, o),
                _ => {
                    return Err(TpmError::BadOutput {
                        what: what_public,
                        reason: "the index is larger than an NV read can address",
                    })
                }
            };
            let mut c = Command::new(CommandCode::NvRead)
                .handle(auth)
                .handle(index)
                .auth(Auth::password());
            c.params().u16(len16).u16(offset);
            let part = self.run(what_read, &c, |_, p| tpm2::nv_read_response(p))?;
            if part.is_empty() || part.len() > len {
                return Err(TpmError::BadOutput {
                    what: what_read,
                    reason: "returned a chunk of the wrong size",
                });
            }
            data.extend_from_slice(&part);
        }
        Ok(Some(data))
    }

    /// Creates and loads an ECC P-256 AK (restricted, sign, fixedTPM, fixedParent,
    /// sensitiveDataOrigin, userWithAuth; ECDSA-SHA256) as a child of `ek` (provider and
    /// evidence modes; the boot path uses [`Tpm::primary_ak`]).
    pub fn create_ak(&mut self, ek: &Ek) -> Result<Ak, TpmError> {
        // One policy session for both commands: a policy session's digest starts over after
        // each use, so it is satisfied again before Load instead of starting a new one.
        let session = self.ek_policy_session(ek.kind)?;
        let result = self.create_and_load_ak(ek, &session);
        self.flush(session.handle);
        result
    }

    fn create_and_load_ak(
        &mut self,
        ek: &Ek,
        session: &auth::PolicySession,
    ) -> Result<Ak, TpmError> {
        let mut c = Command::new(CommandCode::Create)
            .handle(ek.handle)
            .auth(session.auth(true));
        c.params()
            .bytes(&EMPTY_SENSITIVE_CREATE)
            .tpm2b(&auth::ak_template())
            .tpm2b(&[])
            .u32(0);
        let created = self.run("Create (AK)", &c, |_, p| tpm2::create_response(p))?;
        self.satisfy_ek_policy(session)?;
        let mut c = Command::new(CommandCode::Load)
            .handle(ek.handle)
            .auth(session.auth(true));
        let mut w = Writer::new();
        w.bytes(&created.private).tpm2b(&created.public);
        c.params().bytes(w.as_slice());
        let (handle, name) = self.run("Load (AK)", &c, |h, p| Ok((h, tpm2::load_response(p)?)))?;
        let handle = handle.ok_or(TpmError::BadOutput {
            what: "Load (AK)",
            reason: "no object handle",
        })?;
        // The name the TPM returned from Load must be the name of the public area we keep
        // (it is what the server binds the credential to).
        let parsed = Public::parse(&created.public).map_err(TpmError::Remarshal)?;
        if parsed.name() != name {
            self.flush(handle);
            return Err(TpmError::BadOutput {
                what: "Load (AK)",
                reason: "the loaded object's name is not the name of the created AK",
            });
        }
        Ok(Ak {
            handle,
            public: created.public,
            name,
            persistent: false,
        })
    }

    /// TPM2_ActivateCredential: recovers the secret the server wrapped with MakeCredential
    /// for (`ek`, name of `ak`). `credential_blob` and `encrypted_secret` are the
    /// TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET *with* their size prefixes.
    ///
    /// The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT) (or a PolicyOR with it as a
    /// branch), so its authorization is a policy session satisfied with the (empty)
    /// endorsement auth.
    pub fn activate_credential(
        &mut self,
        ak: &Ak,
        ek: &Ek,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let blob = strip_tpm2b(credential_blob, "TPM2B_ID_OBJECT")?;
        let secret = strip_tpm2b(encrypted_secret, "TPM2B_ENCRYPTED_SECRET")?;
        self.activate_credential_contents(ak, ek, blob, secret)
    }

    /// [`Tpm::activate_credential`] for the buffers' contents *without* size prefixes, as
    /// protocol v1's `RegisterResponse` carries them.
    pub fn activate_credential_contents(
        &mut self,
        ak: &Ak,
        ek: &Ek,
        blob: &[u8],
        secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        // TPM2B_ID_OBJECT holds at most an integrity HMAC and an encrypted TPM2B_DIGEST;
        // TPM2B_ENCRYPTED_SECRET at most a TPMU_ENCRYPTED_SECRET (an RSA-2048 block or an
        // ECC point). Checked here so the server's bytes cannot make an oversized command.
        if blob.len() > 2 + 64 + 2 + 64 {
            return Err(TpmError::BadInput {
                field: "TPM2B_ID_OBJECT",
                reason: "longer than the TPM allows",
            });
        }
        if secret.len() > 512 {
            return Err(TpmError::BadInput {
                field: "TPM2B_ENCRYPTED_SECRET",
                reason: "longer than the TPM allows",
            });
        }
        let session = self.ek_policy_session(ek.kind)?;
        // continueSession clear: the TPM flushes the session when the command succeeds.
        let mut c = Command::new(CommandCode::ActivateCredential)
            .handle(ak.handle)
            .handle(ek.handle)
            .auth(Auth::password())
            .auth(session.auth(false));
        c.params().tpm2b(blob).tpm2b(secret);
        let result = self.run("ActivateCredential", &c, |_, p| {
            tpm2::activate_credential_response(p)
        });
        if result.is_err() {
            // A failed command leaves the session loaded; a leaked session slot would make
            // the next boot step fail for an unrelated reason.
            self.flush(session.handle);
        }
        result
    }

    /// The AK as a primary key: read back from [`AK_PERSISTENT_HANDLE`] when a key is
    /// there, else derived with CreatePrimary in the endorsement
    /// hierarchy (deterministic: the same TPM gives the same key every boot, so the server's
    /// pinned name matches without anything stored on disk). The `bool` says whether it
    /// came from the persistent handle.
    pub fn primary_ak(&mut self) -> Result<(Ak, bool), TpmError> {
        if let Some(ak) = self.persistent_ak()? {
            return Ok((ak, true));
        }
        Ok((self.create_primary_ak(AkHierarchy::Endorsement)?, false))
    }

    /// TPM2_EvictControl under owner authorization (empty by default): makes a transient
    /// `obj` persistent at `raw`, or removes the persistent `obj` that is at `raw`.
    fn evict_control(&mut self, obj: u32, raw: u32, op: &'static str) -> Result<(), TpmError> {
        let mut c = Command::new(CommandCode::EvictControl)
            .handle(RH_OWNER)
            .handle(obj)
            .auth(Auth::password());
        c.params().u32(raw);
        self.run(op, &c, |_, p| tpm2::empty_response(p))
    }

    /// The key at [`AK_PERSISTENT_HANDLE`], if any, with its public area (the agent checks
    /// every quote against it before sending). Whether it is the AK is the server's to
    /// judge (it pinned the AK's name); a boot whose AK a role does not know derives the AK
    /// and registers that.
    fn persistent_ak(&mut self) -> Result<Option<Ak>, TpmError> {
        Ok(self.read_public(AK_PERSISTENT_HANDLE)?.map(|k| Ak {
            handle: AK_PERSISTENT_HANDLE,
            public: k.public,
            name: k.name,
            persistent: true,
        }))
    }

    /// Derives the AK as a primary key in `hierarchy` with the AK template.
    pub fn create_primary_ak(&mut self, hierarchy: AkHierarchy) -> Result<Ak, TpmError> {
        let h = match hierarchy {
            AkHierarchy::Endorsement => RH_ENDORSEMENT,
            AkHierarchy::Owner => RH_OWNER,
        };
        let (handle, key) = self.create_primary("CreatePrimary (AK)", h, &auth::ak_template())?;
        Ok(Ak {
            handle,
            public: key.public,
            name: key.name,
            persistent: false,
        })
    }

    /// Makes a transient AK persistent at [`AK_PERSISTENT_HANDLE`], replacing what is
    /// there. The transient copy stays loaded.
    pub fn persist_ak(&mut self, ak: &Ak) -> Result<(), TpmError> {
        if self.read_public(AK_PERSISTENT_HANDLE)?.is_some() {
            self.evict_control(
                AK_PERSISTENT_HANDLE,
                AK_PERSISTENT_HANDLE,
                "EvictControl (remove the old AK)",
            )?;
        }
        self.evict_control(
            ak.handle,
            AK_PERSISTENT_HANDLE,
            "EvictControl (persist the AK)",
        )
    }

    /// The agent id of the object at the EK's persistent handle, if any, without deriving
    /// anything: one ReadPublic. Whether it is the enrolled EK is the server's to say.
    pub fn persistent_ek_id(&mut self, kind: EkKind) -> Result<Option<AgentId>, TpmError> {
        Ok(self
            .read_public(kind.persistent_handle())?
            .map(|k| AgentId::of_ek_name(&k.name).unwrap_or_else(|| AgentId::of_ek(&k.public))))
    }

    /// Makes the EK persistent at its TCG handle when that handle is free (an object put
    /// there by the platform is never replaced). Returns whether it did.
    pub fn persist_ek_if_free(&mut self, ek: &Ek) -> Result<bool, TpmError> {
        let raw = ek.kind.persistent_handle();
        if self.read_public(raw)?.is_some() {
            return Ok(false);
        }
        self.evict_control(ek.handle, raw, "EvictControl (persist the EK)")?;
        Ok(true)
    }

    /// The key at the persistent `handle`, if any, as an AK: the IAK path's AK is the
    /// device's IAK, put there by its OEM. Whether it is acceptable is checked locally on
    /// the first quote and by the server against the IAK certificate.
    pub fn persistent_key(&mut self, handle: u32) -> Result<Option<Ak>, TpmError> {
        Ok(self.read_public(handle)?.map(|k| Ak {
            handle,
            public: k.public,
            name: k.name,
            persistent: true,
        }))
    }

    /// What an OEM's provisioning does for the IAK path, for tests and labs: derives a
    /// restricted ECC P-256 signing key in the endorsement hierarchy from this project's
    /// IAK template (the AK template with a distinct unique field) and persists it at
    /// `handle`, replacing what is there. Returns the key's TPMT_PUBLIC, which the OEM CA
    /// certifies. A real device's IAK is made by its OEM from the TCG templates.
    pub fn provision_iak(&mut self, handle: u32) -> Result<Vec<u8>, TpmError> {
        let (transient, key) =
            self.create_primary("CreatePrimary (IAK)", RH_ENDORSEMENT, &auth::iak_template())?;
        let result = self
            .evict_persistent(handle)
            .and_then(|_| self.evict_control(transient, handle, "EvictControl (persist the IAK)"));
        self.flush(transient);
        result.map(|()| key.public)
    }

    /// Removes the persistent AK, if any (tests: a boot after the handle was evicted).
    pub fn evict_persistent_ak(&mut self) -> Result<bool, TpmError> {
        self.evict_persistent(AK_PERSISTENT_HANDLE)
    }

    /// Removes the persistent EK of `kind`, if any (tests and benchmarks: a TPM whose keys
    /// were never kept, as before the first registration).
    pub fn evict_persistent_ek(&mut self, kind: EkKind) -> Result<bool, TpmError> {
        self.evict_persistent(kind.persistent_handle())
    }

    fn evict_persistent(&mut self, raw: u32) -> Result<bool, TpmError> {
        if self.read_public(raw)?.is_none() {
            return Ok(false);
        }
        self.evict_control(raw, raw, "EvictControl (evict)")?;
        Ok(true)
    }

    /// TPM2_FlushContext of a transient object or session; nothing more can be done if the
    /// flush itself fails, so callers that are already failing ignore it.
    fn flush_handle(&mut self, handle: u32, op: &'static str) -> Result<(), TpmError> {
        let mut c = Command::new(CommandCode::FlushContext);
        c.params().u32(handle);
        self.run(op, &c, |_, p| tpm2::empty_response(p))
    }

    fn flush(&mut self, handle: u32) {
        let _ = self.flush_handle(handle, "FlushContext");
    }

    /// Unloads the EK from the TPM's transient memory.
    pub fn flush_ek(&mut self, ek: Ek) -> Result<(), TpmError> {
        self.flush_handle(ek.handle, "FlushContext (EK)")
    }

    /// Unloads the AK (a persistent AK stays in the TPM: nothing is sent).
    pub fn flush_ak(&mut self, ak: Ak) -> Result<(), TpmError> {
        if ak.persistent {
            return Ok(());
        }
        self.flush_handle(ak.handle, "FlushContext (AK)")
    }
}

/// Removes a TPM2B size prefix after checking that it matches the bytes present.
fn strip_tpm2b<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a [u8], TpmError> {
    let bad = |reason| TpmError::BadInput { field, reason };
    let (size, body) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| bad("shorter than its size field"))?;
    if usize::from(u16::from_be_bytes(*size)) != body.len() {
        return Err(bad("size field does not match the length"));
    }
    Ok(body)
}
