//! The agent's only door to the TPM: endorsement key, EK certificate, attestation key and
//! credential activation, through `tss-esapi`.
//!
//! Everything this module hands out is plain bytes in TPM wire format (TPMT_PUBLIC,
//! TPM2B_NAME, DER), so the server can check it with `verifier-core` without trusting this
//! code. Handles stay inside: callers get [`Ek`] and [`Ak`] values that only this module can
//! use.
//!
//! Submodules: `auth` (which authorization each command uses, and why), `pcr` (reads,
//! active banks, the release extend) and `quote` (TPM2_Quote, re-marshalled exactly as
//! signed and checked locally with `verifier-core`).

mod auth;
mod pcr;
mod quote;

pub use pcr::{full_selection, RELEASE_EVENT};
pub use quote::{Quote, QuotedPcrs};

use std::str::FromStr;

use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::constants::PropertyTag;
use tss_esapi::handles::{
    KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, PersistentTpmHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth};
use tss_esapi::structures::{EncryptedSecret, IdObject};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;
use verifier_core::proto::v1::AgentId;
use zeroize::Zeroizing;

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

/// Which default EK template (TCG EK Credential Profile, low range) to instantiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkKind {
    /// RSA 2048, SHA-256 name, AES-128-CFB (template L-1).
    Rsa2048,
    /// ECC NIST P-256, SHA-256 name, AES-128-CFB (template L-2).
    EccP256,
    /// ECC NIST P-384, SHA-384 name, AES-256-CFB (high range template H-3). Its authPolicy
    /// is a PolicyOR that [`Tpm::activate_credential`] does not satisfy yet.
    EccP384,
}

impl EkKind {
    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            Self::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            Self::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            Self::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }

    /// NV index where manufacturers store this EK's certificate.
    pub fn cert_nv_index(self) -> u32 {
        match self {
            Self::Rsa2048 => RSA_EK_CERT_NV_INDEX,
            Self::EccP256 => ECC_EK_CERT_NV_INDEX,
            Self::EccP384 => ECC_P384_EK_CERT_NV_INDEX,
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
        /// What tss-esapi reported.
        source: tss_esapi::Error,
    },
    /// A TPM command or tss-esapi call failed.
    #[error("TPM {op} failed: {source}")]
    Command {
        /// The operation that failed (for the person reading the console).
        op: &'static str,
        /// What tss-esapi reported.
        source: tss_esapi::Error,
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
    /// The TPM (or tss-esapi) returned something inconsistent.
    #[error("TPM {what} returned unusable output: {reason}")]
    BadOutput {
        /// The command.
        what: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// What tss-esapi marshalled does not parse with verifier-core (so the server would
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

fn cmd(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { op, source }
}

/// An endorsement key loaded in the TPM.
#[derive(Debug)]
pub struct Ek {
    handle: KeyHandle,
    kind: EkKind,
    public: Vec<u8>,
}

impl Ek {
    /// The EK's TPMT_PUBLIC as marshalled by the TPM stack (no size prefix).
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
        }
    }
}

/// An attestation key (ECC P-256, ECDSA-SHA256, restricted signing) loaded under the EK.
#[derive(Debug)]
pub struct Ak {
    handle: KeyHandle,
    public: Vec<u8>,
    name: Vec<u8>,
    /// Read back from a persistent handle (closed, never flushed).
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
#[allow(missing_debug_implementations)] // tss_esapi::Context has no Debug.
pub struct Tpm {
    ctx: Context,
    /// TPM commands sent through this module (each call site counts the commands it sends;
    /// ESYS sends none of its own for the calls the boot path makes).
    commands: u32,
}

impl Tpm {
    /// TPM commands sent so far through this connection.
    pub fn commands(&self) -> u32 {
        self.commands
    }

    fn sent(&mut self, n: u32) {
        self.commands = self.commands.saturating_add(n);
    }

    /// Connects through a TCTI configuration string such as `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321`.
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        let open_err = |source| TpmError::Open {
            tcti: tcti.to_owned(),
            source,
        };
        let conf = TctiNameConf::from_str(tcti).map_err(open_err)?;
        let ctx = Context::new(conf).map_err(open_err)?;
        Ok(Self { ctx, commands: 0 })
    }

    /// Creates the EK from the default template of `kind` (deterministic: the same TPM
    /// always yields the same key, which is what the EK certificate certifies).
    pub fn create_ek(&mut self, kind: EkKind) -> Result<Ek, TpmError> {
        let template = ek::create_ek_public_from_default_template_2(kind.selection(), None)
            .map_err(cmd("EK template"))?;
        let created = self
            .ctx
            .execute_with_session(auth::PASSWORD, |ctx| {
                ctx.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .map_err(cmd("CreatePrimary (EK)"))?;
        self.sent(1);
        let handle = created.key_handle;
        // CreatePrimary returns the public area: no ReadPublic round trip.
        let public = match created.out_public.marshall() {
            Ok(p) => p,
            Err(e) => {
                let _ = self.ctx.flush_context(handle.into());
                return Err(TpmError::Command {
                    op: "marshal EK public",
                    source: e,
                });
            }
        };
        Ok(Ek {
            handle,
            kind,
            public,
        })
    }

    /// Reads the EK certificate (DER) from its NV index, or `None` when the TPM has none.
    pub fn read_ek_cert(&mut self, kind: EkKind) -> Result<Option<Vec<u8>>, TpmError> {
        let index =
            NvIndexTpmHandle::new(kind.cert_nv_index()).map_err(cmd("EK certificate NV index"))?;
        let present = self
            .ctx
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(index)));
        self.sent(1);
        let nv = match present {
            Ok(handle) => handle,
            // No such index: this TPM was provisioned without a certificate.
            Err(_) => return Ok(None),
        };
        let nv_handle = NvIndexHandle::from(nv);
        let (public, _) = self
            .ctx
            .execute_without_session(|ctx| ctx.nv_read_public(nv_handle))
            .map_err(cmd("NV_ReadPublic (EK certificate)"))?;
        self.sent(2); // NV_ReadPublic, GetCapability (NV buffer size)
        let size = public.data_size();
        let chunk = self
            .ctx
            .get_tpm_property(PropertyTag::NvBufferMax)
            .ok()
            .flatten()
            .and_then(|v| usize::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(MIN_NV_BUFFER_MAX);
        let mut cert = Vec::with_capacity(size);
        while cert.len() < size {
            let len = chunk.min(size - cert.len());
            let (len16, offset) = match (u16::try_from(len), u16::try_from(cert.len())) {
                (Ok(l), Ok(o)) => (l, o),
                _ => {
                    return Err(TpmError::BadOutput {
                        what: "NV_ReadPublic (EK certificate)",
                        reason: "the index is larger than an NV read can address",
                    })
                }
            };
            let part = self
                .ctx
                .execute_with_session(auth::PASSWORD, |ctx| {
                    ctx.nv_read(NvAuth::NvIndex(nv_handle), nv_handle, len16, offset)
                })
                .map_err(cmd("NV_Read (EK certificate)"))?;
            self.sent(1);
            if part.is_empty() || part.len() > len {
                return Err(TpmError::BadOutput {
                    what: "NV_Read (EK certificate)",
                    reason: "returned a chunk of the wrong size",
                });
            }
            cert.extend_from_slice(&part);
        }
        Ok(Some(cert))
    }

    /// Creates and loads an ECC P-256 AK (restricted, sign, fixedTPM, fixedParent,
    /// sensitiveDataOrigin, userWithAuth; ECDSA-SHA256) as a child of `ek`. Being in the
    /// endorsement hierarchy keeps the quote's resetCount unobfuscated.
    pub fn create_ak(&mut self, ek: &Ek) -> Result<Ak, TpmError> {
        if ek.kind == EkKind::EccP384 {
            return self.create_ak_high_range(ek);
        }
        let template = auth::ak_template()?;
        // One policy session for both commands: a policy session's digest starts over after
        // each use, so it is satisfied again before Load instead of starting a new one.
        let session = auth::ek_policy_session(&mut self.ctx, false)?;
        let result = self.create_and_load_ak(ek, template, session);
        auth::flush(&mut self.ctx, session);
        self.sent(3); // StartAuthSession, the first PolicySecret, FlushContext (the session)
        result
    }

    fn create_and_load_ak(
        &mut self,
        ek: &Ek,
        template: tss_esapi::structures::Public,
        session: tss_esapi::interface_types::session_handles::AuthSession,
    ) -> Result<Ak, TpmError> {
        let created = self
            .ctx
            .execute_with_session(Some(session), |ctx| {
                ctx.create(ek.handle, template, None, None, None, None)
            })
            .map_err(cmd("Create (AK)"))?;
        self.sent(1);
        let public = created
            .out_public
            .marshall()
            .map_err(cmd("marshal AK public"))?;
        auth::satisfy_ek_policy(&mut self.ctx, session)?;
        let handle = self
            .ctx
            .execute_with_session(Some(session), |ctx| {
                ctx.load(ek.handle, created.out_private, created.out_public)
            })
            .map_err(cmd("Load (AK)"))?;
        self.sent(2); // PolicySecret, Load
                      // The name the TPM returned from Load (ESYS keeps it): no ReadPublic round trip.
        let name = self.ctx.tr_get_name(handle.into());
        let name = match name {
            Ok(n) => n.value().to_vec(),
            Err(e) => {
                let _ = self.ctx.flush_context(handle.into());
                return Err(TpmError::Command {
                    op: "TR_GetName (AK)",
                    source: e,
                });
            }
        };
        Ok(Ak {
            handle,
            public,
            name,
            persistent: false,
        })
    }

    /// [`Tpm::create_ak`] under a high-range EK, whose authPolicy is a PolicyOR: through
    /// tss-esapi's abstraction (slower, but these EKs cannot activate credentials yet).
    fn create_ak_high_range(&mut self, ek: &Ek) -> Result<Ak, TpmError> {
        let created = ak::create_ak_2(
            &mut self.ctx,
            ek.handle,
            HashingAlgorithm::Sha256,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            None,
            None,
        )
        .map_err(cmd("Create (AK)"))?;
        let handle = ak::load_ak(
            &mut self.ctx,
            ek.handle,
            None,
            created.out_private,
            created.out_public,
        )
        .map_err(cmd("Load (AK)"))?;
        self.ak_from_handle(handle)
    }

    fn ak_from_handle(&mut self, handle: KeyHandle) -> Result<Ak, TpmError> {
        let (public, name, _) = self
            .ctx
            .read_public(handle)
            .map_err(cmd("ReadPublic (AK)"))?;
        self.sent(1);
        Ok(Ak {
            handle,
            public: public.marshall().map_err(cmd("marshal AK public"))?,
            name: name.value().to_vec(),
            persistent: false,
        })
    }

    /// TPM2_ActivateCredential: recovers the secret the server wrapped with MakeCredential
    /// for (`ek`, name of `ak`). `credential_blob` and `encrypted_secret` are the
    /// TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET *with* their size prefixes.
    ///
    /// The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT), so its authorization is a
    /// policy session satisfied with the (empty) endorsement auth.
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
        if ek.kind == EkKind::EccP384 {
            // FIXME: high-range EKs need a SHA-384 session with PolicySecret + PolicyOR.
            return Err(TpmError::Unsupported(
                "ActivateCredential is implemented for the low-range (SHA-256) EK templates only",
            ));
        }
        let blob = IdObject::try_from(blob.to_vec()).map_err(|_| TpmError::BadInput {
            field: "TPM2B_ID_OBJECT",
            reason: "longer than the TPM allows",
        })?;
        let secret =
            EncryptedSecret::try_from(secret.to_vec()).map_err(|_| TpmError::BadInput {
                field: "TPM2B_ENCRYPTED_SECRET",
                reason: "longer than the TPM allows",
            })?;

        let session = auth::ek_policy_session(&mut self.ctx, true)?;
        let digest = self
            .ctx
            .execute_with_sessions((auth::PASSWORD, Some(session), None), |ctx| {
                ctx.activate_credential(ak.handle, ek.handle, blob, secret)
            });
        // The session is flushed whatever happened; a leaked session slot would make the
        // next boot step fail for an unrelated reason.
        auth::flush(&mut self.ctx, session);
        // StartAuthSession, PolicySecret, ActivateCredential, FlushContext (the session).
        self.sent(4);
        let digest = digest.map_err(cmd("ActivateCredential"))?;
        Ok(Zeroizing::new(digest.value().to_vec()))
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

    /// The object at persistent handle `raw`, if any (TPM2_ReadPublic through ESYS).
    fn persistent(&mut self, raw: u32) -> Result<Option<ObjectHandle>, TpmError> {
        let handle = PersistentTpmHandle::new(raw).map_err(cmd("persistent handle"))?;
        let found = self
            .ctx
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::Persistent(handle)))
            .ok();
        self.sent(1); // ReadPublic
        Ok(found)
    }

    /// TPM2_EvictControl under owner authorization (empty by default): makes a transient
    /// `obj` persistent at `raw`, or removes the persistent `obj` that is at `raw`.
    fn evict_control(
        &mut self,
        obj: ObjectHandle,
        raw: u32,
        op: &'static str,
    ) -> Result<(), TpmError> {
        let handle = PersistentTpmHandle::new(raw).map_err(cmd("persistent handle"))?;
        self.ctx
            .execute_with_session(auth::PASSWORD, |ctx| {
                ctx.evict_control(Provision::Owner, obj, Persistent::Persistent(handle))
            })
            .map(drop)
            .map_err(cmd(op))?;
        self.sent(1);
        Ok(())
    }

    /// The key at [`AK_PERSISTENT_HANDLE`], if any, with its public area (the agent checks
    /// every quote against it before sending). Whether it is the AK is the server's to
    /// judge (it pinned the AK's name); a boot whose AK a role does not know derives the AK
    /// and registers that.
    fn persistent_ak(&mut self) -> Result<Option<Ak>, TpmError> {
        let Some(obj) = self.persistent(AK_PERSISTENT_HANDLE)? else {
            return Ok(None);
        };
        let mut ak = self.ak_from_handle(KeyHandle::from(obj))?;
        ak.persistent = true;
        Ok(Some(ak))
    }

    /// Derives the AK as a primary key in `hierarchy` with the AK template.
    pub fn create_primary_ak(&mut self, hierarchy: AkHierarchy) -> Result<Ak, TpmError> {
        let template = auth::ak_template()?;
        let h = match hierarchy {
            AkHierarchy::Endorsement => Hierarchy::Endorsement,
            AkHierarchy::Owner => Hierarchy::Owner,
        };
        let created = self
            .ctx
            .execute_with_session(auth::PASSWORD, |ctx| {
                ctx.create_primary(h, template, None, None, None, None)
            })
            .map_err(cmd("CreatePrimary (AK)"))?;
        self.sent(1);
        let handle = created.key_handle;
        let public = created.out_public.marshall();
        let name = self.ctx.tr_get_name(handle.into());
        match (public, name) {
            (Ok(public), Ok(name)) => Ok(Ak {
                handle,
                public,
                name: name.value().to_vec(),
                persistent: false,
            }),
            (Err(e), _) | (_, Err(e)) => {
                let _ = self.ctx.flush_context(handle.into());
                Err(TpmError::Command {
                    op: "AK public area and name",
                    source: e,
                })
            }
        }
    }

    /// Makes a transient AK persistent at [`AK_PERSISTENT_HANDLE`], replacing what is
    /// there. The transient copy stays loaded.
    pub fn persist_ak(&mut self, ak: &Ak) -> Result<(), TpmError> {
        if let Some(old) = self.persistent(AK_PERSISTENT_HANDLE)? {
            self.evict_control(
                old,
                AK_PERSISTENT_HANDLE,
                "EvictControl (remove the old AK)",
            )?;
        }
        self.evict_control(
            ak.handle.into(),
            AK_PERSISTENT_HANDLE,
            "EvictControl (persist the AK)",
        )
    }

    /// The agent id of the object at the EK's persistent handle, if any, without deriving
    /// anything. For a SHA-256 name the ReadPublic that made the handle is the only command
    /// ([`AgentId::of_ek_name`]); otherwise the public area is read and hashed. Whether it
    /// is the enrolled EK is the server's to say.
    pub fn persistent_ek_id(&mut self, kind: EkKind) -> Result<Option<AgentId>, TpmError> {
        let Some(obj) = self.persistent(kind.persistent_handle())? else {
            return Ok(None);
        };
        let from_name = self
            .ctx
            .tr_get_name(obj)
            .ok()
            .and_then(|n| AgentId::of_ek_name(n.value()));
        let id = match from_name {
            Some(id) => Ok(id),
            None => self
                .ak_from_handle(KeyHandle::from(obj))
                .map(|k| AgentId::of_ek(&k.public)),
        };
        let mut obj = obj;
        let _ = self.ctx.tr_close(&mut obj);
        id.map(Some)
    }

    /// Makes the EK persistent at its TCG handle when that handle is free (an object put
    /// there by the platform is never replaced). Returns whether it did.
    pub fn persist_ek_if_free(&mut self, ek: &Ek) -> Result<bool, TpmError> {
        let raw = ek.kind.persistent_handle();
        if self.persistent(raw)?.is_some() {
            return Ok(false);
        }
        self.evict_control(ek.handle.into(), raw, "EvictControl (persist the EK)")?;
        Ok(true)
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
        let Some(old) = self.persistent(raw)? else {
            return Ok(false);
        };
        self.evict_control(old, raw, "EvictControl (evict)")?;
        Ok(true)
    }

    /// Unloads a key (EK or AK) from the TPM's transient memory.
    pub fn flush_ek(&mut self, ek: Ek) -> Result<(), TpmError> {
        self.sent(1);
        self.ctx
            .flush_context(ek.handle.into())
            .map_err(cmd("FlushContext (EK)"))
    }

    /// Unloads the AK (a persistent AK is only closed: it stays in the TPM).
    pub fn flush_ak(&mut self, ak: Ak) -> Result<(), TpmError> {
        if ak.persistent {
            let mut obj = ak.handle.into();
            return self.ctx.tr_close(&mut obj).map_err(cmd("TR_Close (AK)"));
        }
        self.sent(1);
        self.ctx
            .flush_context(ak.handle.into())
            .map_err(cmd("FlushContext (AK)"))
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
