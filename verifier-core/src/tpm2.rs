//! TPM 2.0 commands and responses as bytes: the agent's TPM stack without a TSS.
//!
//! The agent sends a dozen commands (TPM 2.0 Part 3) and needs nothing of a full TSS: no
//! HMAC or salted sessions, no parameter encryption, no resource management (the kernel's
//! `/dev/tpmrm0` does that). Building those commands and decoding their responses here,
//! with the same bounded [`Reader`] every other untrusted byte goes through, lets the agent
//! link statically without libtss2, and keeps the decoding of what a TPM (or whatever sits
//! on the bus or the swtpm socket) answers testable and fuzzable without a TPM.
//!
//! This module does no I/O. [`Command`] marshals a command with its handles, its
//! authorization area and its parameters; [`Response::parse`] checks the header and splits
//! the response into its handle and parameter area; the `*_response` functions decode each
//! command's parameters and refuse trailing bytes, oversized buffers and structures that
//! disagree with each other (a name that is not the hash of the public area it came with).

use zeroize::Zeroizing;

use crate::wire::{
    Attest, HashAlg, PcrSelection, Public, Reader, Signature, Writer, MAX_ATTEST_SIZE,
    MAX_DIGEST_SIZE, MAX_NAME_SIZE, MAX_PUBLIC_SIZE,
};
use crate::ParseError;

/// TPM_ST_NO_SESSIONS: a command or response without an authorization area.
pub const ST_NO_SESSIONS: u16 = 0x8001;
/// TPM_ST_SESSIONS: a command or response with an authorization area.
pub const ST_SESSIONS: u16 = 0x8002;
/// TPM_RS_PW: the password authorization "session".
pub const RS_PW: u32 = 0x4000_0009;
/// TPM_RH_OWNER.
pub const RH_OWNER: u32 = 0x4000_0001;
/// TPM_RH_NULL.
pub const RH_NULL: u32 = 0x4000_0007;
/// TPM_RH_ENDORSEMENT.
pub const RH_ENDORSEMENT: u32 = 0x4000_000b;
/// TPMA_SESSION continueSession: the session survives the command it authorizes.
pub const CONTINUE_SESSION: u8 = 0x01;
/// TPM_SE_POLICY.
pub const SE_POLICY: u8 = 0x01;
/// TPM_ALG_NULL.
pub const ALG_NULL: u16 = 0x0010;
/// TPM_ALG_ECDSA.
pub const ALG_ECDSA: u16 = 0x0018;
/// TPM_ALG_RSASSA (PKCS#1 v1.5): the scheme of an RSA AK such as an Azure vTPM's.
pub const ALG_RSASSA: u16 = 0x0014;
/// TPM_CAP_PCRS.
pub const CAP_PCRS: u32 = 0x0000_0005;
/// TPM_CAP_TPM_PROPERTIES.
pub const CAP_TPM_PROPERTIES: u32 = 0x0000_0006;
/// TPM_PT_NV_BUFFER_MAX (PT_FIXED + 44): the largest NV_Read the TPM serves.
pub const PT_NV_BUFFER_MAX: u32 = 0x0000_012c;

/// Largest response the agent accepts from any transport. TPM 2.0 PC Client TPMs answer
/// at most 4096 bytes (TPM_PT_MAX_RESPONSE_SIZE); the margin is for simulators.
pub const MAX_RESPONSE_SIZE: usize = 16 * 1024;
/// Size of a response header (tag, responseSize, responseCode).
pub const HEADER_SIZE: usize = 10;

/// TPM2B_PRIVATE's bound: a sized buffer of at most this many bytes (the reference
/// implementation's `sizeof(_PRIVATE)` is well below it).
const MAX_PRIVATE_SIZE: usize = 1024;
/// TPM2B_MAX_NV_BUFFER's bound (MAX_NV_BUFFER_SIZE is 1024 or 2048 in practice).
pub const MAX_NV_BUFFER_SIZE: usize = 4096;
/// A TPML_DIGEST carries at most 8 digests.
const MAX_DIGESTS: usize = 8;
/// How many PCR banks a TPM may report (TPML_PCR_SELECTION holds HASH_COUNT entries).
const MAX_CAP_BANKS: usize = 16;
/// How many properties a GetCapability response may carry before it is refused.
const MAX_CAP_PROPERTIES: usize = 256;
/// TPM2B_CREATION_DATA's bound (a TPMS_CREATION_DATA is far below it).
const MAX_CREATION_DATA: usize = 2048;
/// TPM2B_TIMEOUT's bound.
const MAX_TIMEOUT: usize = 8;

/// TPM command codes (TPM_CC) the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CommandCode {
    /// TPM2_EvictControl.
    EvictControl = 0x0000_0120,
    /// TPM2_CreatePrimary.
    CreatePrimary = 0x0000_0131,
    /// TPM2_ActivateCredential.
    ActivateCredential = 0x0000_0147,
    /// TPM2_NV_Read.
    NvRead = 0x0000_014e,
    /// TPM2_PolicySecret.
    PolicySecret = 0x0000_0151,
    /// TPM2_Create.
    Create = 0x0000_0153,
    /// TPM2_Load.
    Load = 0x0000_0157,
    /// TPM2_Quote.
    Quote = 0x0000_0158,
    /// TPM2_FlushContext.
    FlushContext = 0x0000_0165,
    /// TPM2_NV_ReadPublic.
    NvReadPublic = 0x0000_0169,
    /// TPM2_PolicyOR.
    PolicyOr = 0x0000_0171,
    /// TPM2_ReadPublic.
    ReadPublic = 0x0000_0173,
    /// TPM2_StartAuthSession.
    StartAuthSession = 0x0000_0176,
    /// TPM2_GetCapability.
    GetCapability = 0x0000_017a,
    /// TPM2_PCR_Read.
    PcrRead = 0x0000_017e,
    /// TPM2_PCR_Extend.
    PcrExtend = 0x0000_0182,
}

impl CommandCode {
    /// Whether the response carries a handle before its parameters (Part 3: only the
    /// commands that create a transient object or a session do).
    pub fn response_has_handle(self) -> bool {
        matches!(
            self,
            Self::CreatePrimary | Self::Load | Self::StartAuthSession
        )
    }
}

/// One entry of a command's authorization area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    handle: u32,
    nonce: Vec<u8>,
    attributes: u8,
}

impl Auth {
    /// The password session with the empty password (TPM_RS_PW, no nonce, no HMAC): what
    /// every entity the agent uses is authorized with, apart from the EK's policy.
    pub fn password() -> Self {
        Self {
            handle: RS_PW,
            nonce: Vec::new(),
            attributes: 0,
        }
    }

    /// A policy session without HMAC (its policy asks for no authValue). `nonce` is the
    /// caller's fresh nonce; with `keep` the session outlives the command.
    pub fn policy(handle: u32, nonce: Vec<u8>, keep: bool) -> Self {
        Self {
            handle,
            nonce,
            attributes: if keep { CONTINUE_SESSION } else { 0 },
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u32(self.handle)
            .tpm2b(&self.nonce)
            .u8(self.attributes)
            .u16(0);
    }
}

/// A command under construction: handles, authorizations, then parameters.
#[derive(Debug, Clone)]
pub struct Command {
    code: CommandCode,
    handles: Vec<u32>,
    auths: Vec<Auth>,
    params: Writer,
}

impl Command {
    /// A command with no handles, authorizations or parameters yet.
    pub fn new(code: CommandCode) -> Self {
        Self {
            code,
            handles: Vec::new(),
            auths: Vec::new(),
            params: Writer::new(),
        }
    }

    /// The command code.
    pub fn code(&self) -> CommandCode {
        self.code
    }

    /// Whether the command carries an authorization area (so its response does too).
    pub fn has_sessions(&self) -> bool {
        !self.auths.is_empty()
    }

    /// Appends a handle (in the order Part 3 lists them).
    pub fn handle(mut self, handle: u32) -> Self {
        self.handles.push(handle);
        self
    }

    /// Appends an authorization (in the order of the handles that need one).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auths.push(auth);
        self
    }

    /// The parameter area, to append parameters to.
    pub fn params(&mut self) -> &mut Writer {
        &mut self.params
    }

    /// The command's bytes, header included.
    pub fn marshal(&self) -> Vec<u8> {
        let mut body = Writer::new();
        for h in &self.handles {
            body.u32(*h);
        }
        if !self.auths.is_empty() {
            let mut area = Writer::new();
            for a in &self.auths {
                a.write(&mut area);
            }
            let area = area.into_vec();
            body.u32(u32::try_from(area.len()).unwrap_or(u32::MAX));
            body.bytes(&area);
        }
        body.bytes(self.params.as_slice());
        let body = body.into_vec();
        let mut w = Writer::new();
        let tag = if self.auths.is_empty() {
            ST_NO_SESSIONS
        } else {
            ST_SESSIONS
        };
        let size = u32::try_from(body.len().saturating_add(HEADER_SIZE)).unwrap_or(u32::MAX);
        w.u16(tag).u32(size).u32(self.code as u32).bytes(&body);
        w.into_vec()
    }
}

/// A response that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The TPM refused the command with this response code (TPM 2.0 Part 2, TPM_RC).
    #[error("the TPM answered with response code 0x{0:03x}")]
    Code(u32),
    /// The bytes are not a well-formed response to the command.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Well-formed, but inconsistent with itself or with the command.
    #[error("{0}")]
    Inconsistent(&'static str),
}

impl ResponseError {
    /// Whether the TPM said that a handle of the command does not exist (TPM_RC_HANDLE,
    /// format 1, any handle position): how a ReadPublic or NV_ReadPublic of an empty
    /// persistent handle or NV index ends.
    pub fn is_missing_handle(&self) -> bool {
        match *self {
            // Format 1 (bit 7), no parameter bit (bit 6), error number 0x0b.
            Self::Code(rc) => rc & 0x80 != 0 && rc & 0x40 == 0 && rc & 0x3f == 0x0b,
            _ => false,
        }
    }
}

/// The checked parts of a successful response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    /// The response handle, for commands that return one.
    pub handle: Option<u32>,
    /// The response parameters (without the authorization area).
    pub params: &'a [u8],
}

impl<'a> Response<'a> {
    /// Checks the header of `bytes` (the whole response as read from the transport):
    /// responseSize must be the number of bytes read, a success must be tagged as the
    /// command was (with or without sessions), a failure must carry nothing after its code.
    /// Returns the handle (when `code` has one) and the parameter area; the authorization
    /// area after it is checked for shape and then ignored (password and HMAC-less policy
    /// sessions have no response HMAC to verify).
    pub fn parse(
        bytes: &'a [u8],
        code: CommandCode,
        sessions: bool,
    ) -> Result<Self, ResponseError> {
        let mut r = Reader::new("TPM response", bytes);
        let tag = r.u16("tag")?;
        let size = r.u32("responseSize")?;
        if usize::try_from(size).ok() != Some(bytes.len()) {
            return Err(r.invalid("responseSize", u64::from(size)).into());
        }
        let rc = r.u32("responseCode")?;
        if rc != 0 {
            if tag != ST_NO_SESSIONS {
                return Err(r.invalid("tag", u64::from(tag)).into());
            }
            r.finish()?;
            return Err(ResponseError::Code(rc));
        }
        let expected = if sessions {
            ST_SESSIONS
        } else {
            ST_NO_SESSIONS
        };
        if tag != expected {
            return Err(r.invalid("tag", u64::from(tag)).into());
        }
        let handle = if code.response_has_handle() {
            Some(r.u32("handle")?)
        } else {
            None
        };
        let params = if sessions {
            let len = r.u32("parameterSize")?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let params = r.bounded(len, "parameters", MAX_RESPONSE_SIZE)?;
            // The authorization area: one entry per session of the command.
            let mut entries = 0usize;
            while !r.is_empty() {
                r.tpm2b("nonceTPM", MAX_DIGEST_SIZE)?;
                r.u8("sessionAttributes")?;
                r.tpm2b("hmac", MAX_DIGEST_SIZE)?;
                entries += 1;
                if entries > 3 {
                    return Err(ResponseError::Inconsistent(
                        "the response has more than three authorizations",
                    ));
                }
            }
            if entries == 0 {
                return Err(ResponseError::Inconsistent(
                    "a response to a command with sessions has no authorization area",
                ));
            }
            params
        } else {
            r.rest()
        };
        Ok(Self { handle, params })
    }

    /// The handle, for commands that return one.
    pub fn required_handle(&self) -> Result<u32, ResponseError> {
        self.handle.ok_or(ResponseError::Inconsistent(
            "the response carries no handle",
        ))
    }
}

/// Reads a TPM2B_PUBLIC, returning the TPMT_PUBLIC's bytes exactly as the TPM marshalled
/// them (what names and signatures are computed over) and its parse.
fn read_public(r: &mut Reader<'_>) -> Result<(Vec<u8>, Public), ResponseError> {
    let bytes = r.tpm2b("outPublic", MAX_PUBLIC_SIZE)?;
    let public = Public::parse(bytes)?;
    Ok((bytes.to_vec(), public))
}

/// Checks that `name` is the name of `public` (nameAlg || H(TPMT_PUBLIC)).
fn check_name(public: &Public, name: &[u8]) -> Result<(), ResponseError> {
    if public.name() == name {
        Ok(())
    } else {
        Err(ResponseError::Inconsistent(
            "the name the TPM returned is not the name of the public area it returned",
        ))
    }
}

/// Skips TPM2B_CREATION_DATA, TPM2B_DIGEST creationHash and TPMT_TK_CREATION (the agent
/// certifies no creation).
fn skip_creation(r: &mut Reader<'_>) -> Result<(), ResponseError> {
    r.tpm2b("creationData", MAX_CREATION_DATA)?;
    r.tpm2b("creationHash", MAX_DIGEST_SIZE)?;
    r.u16("creationTicket.tag")?;
    r.u32("creationTicket.hierarchy")?;
    r.tpm2b("creationTicket.digest", MAX_DIGEST_SIZE)?;
    Ok(())
}

/// A key the TPM created or loaded: its TPMT_PUBLIC (as marshalled by the TPM) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPublic {
    /// TPMT_PUBLIC bytes, no size prefix.
    pub public: Vec<u8>,
    /// TPM2B_NAME contents (nameAlg || digest), checked against `public`.
    pub name: Vec<u8>,
}

/// TPM2_CreatePrimary's parameters: outPublic, creation data (skipped) and name.
pub fn create_primary_response(params: &[u8]) -> Result<KeyPublic, ResponseError> {
    let mut r = Reader::new("TPM2_CreatePrimary response", params);
    let (public, parsed) = read_public(&mut r)?;
    skip_creation(&mut r)?;
    let name = r.tpm2b("name", MAX_NAME_SIZE)?.to_vec();
    r.finish()?;
    check_name(&parsed, &name)?;
    Ok(KeyPublic { public, name })
}

/// TPM2_ReadPublic's parameters: outPublic, name, qualifiedName.
pub fn read_public_response(params: &[u8]) -> Result<KeyPublic, ResponseError> {
    let mut r = Reader::new("TPM2_ReadPublic response", params);
    let (public, parsed) = read_public(&mut r)?;
    let name = r.tpm2b("name", MAX_NAME_SIZE)?.to_vec();
    r.tpm2b("qualifiedName", MAX_NAME_SIZE)?;
    r.finish()?;
    check_name(&parsed, &name)?;
    Ok(KeyPublic { public, name })
}

/// What TPM2_Create returns that TPM2_Load needs back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedKey {
    /// TPM2B_PRIVATE *with* its size prefix (handed back to Load unchanged).
    pub private: Vec<u8>,
    /// TPMT_PUBLIC bytes, no size prefix.
    pub public: Vec<u8>,
}

/// TPM2_Create's parameters: outPrivate, outPublic, creation data (skipped).
pub fn create_response(params: &[u8]) -> Result<CreatedKey, ResponseError> {
    let mut r = Reader::new("TPM2_Create response", params);
    let private = r.tpm2b("outPrivate", MAX_PRIVATE_SIZE)?;
    let mut w = Writer::new();
    w.tpm2b(private);
    let (public, _) = read_public(&mut r)?;
    skip_creation(&mut r)?;
    r.finish()?;
    Ok(CreatedKey {
        private: w.into_vec(),
        public,
    })
}

/// TPM2_Load's parameters: the loaded object's name.
pub fn load_response(params: &[u8]) -> Result<Vec<u8>, ResponseError> {
    let mut r = Reader::new("TPM2_Load response", params);
    let name = r.tpm2b("name", MAX_NAME_SIZE)?.to_vec();
    r.finish()?;
    Ok(name)
}

/// TPM2_StartAuthSession's parameters: nonceTPM (checked for shape, then unused: no HMAC
/// is computed with it).
pub fn start_auth_session_response(params: &[u8]) -> Result<(), ResponseError> {
    let mut r = Reader::new("TPM2_StartAuthSession response", params);
    r.tpm2b("nonceTPM", MAX_DIGEST_SIZE)?;
    r.finish()?;
    Ok(())
}

/// TPM2_PolicySecret's parameters: timeout and policyTicket (checked for shape only).
pub fn policy_secret_response(params: &[u8]) -> Result<(), ResponseError> {
    let mut r = Reader::new("TPM2_PolicySecret response", params);
    r.tpm2b("timeout", MAX_TIMEOUT)?;
    r.u16("policyTicket.tag")?;
    r.u32("policyTicket.hierarchy")?;
    r.tpm2b("policyTicket.digest", MAX_DIGEST_SIZE)?;
    r.finish()?;
    Ok(())
}

/// Responses without parameters (FlushContext, EvictControl, PCR_Extend, PolicyOR).
pub fn empty_response(params: &[u8]) -> Result<(), ResponseError> {
    Reader::new("response parameters", params).finish()?;
    Ok(())
}

/// TPM2_ActivateCredential's parameters: certInfo (the credential secret).
pub fn activate_credential_response(params: &[u8]) -> Result<Zeroizing<Vec<u8>>, ResponseError> {
    let mut r = Reader::new("TPM2_ActivateCredential response", params);
    let secret = Zeroizing::new(r.tpm2b("certInfo", MAX_DIGEST_SIZE)?.to_vec());
    r.finish()?;
    Ok(secret)
}

/// A quote exactly as the TPM returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteResponse {
    /// TPMS_ATTEST bytes (TPM2B_ATTEST contents): what the signature covers.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE bytes as marshalled by the TPM.
    pub signature: Vec<u8>,
}

/// TPM2_Quote's parameters: quoted (TPM2B_ATTEST) and signature (TPMT_SIGNATURE), both
/// parsed with the server's parsers and returned as the TPM's bytes.
pub fn quote_response(params: &[u8]) -> Result<QuoteResponse, ResponseError> {
    let mut r = Reader::new("TPM2_Quote response", params);
    let attest = r.tpm2b("quoted", MAX_ATTEST_SIZE)?;
    Attest::parse(attest)?;
    let signature = r.rest();
    Signature::parse(signature)?;
    Ok(QuoteResponse {
        attest: attest.to_vec(),
        signature: signature.to_vec(),
    })
}

/// TPM2_PCR_Read's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrReadResponse {
    /// pcrUpdateCounter.
    pub update_counter: u32,
    /// The PCRs whose values follow (a subset of those asked for).
    pub selection: PcrSelection,
    /// One digest per selected PCR, bank by bank in the selection's order, ascending index.
    pub digests: Vec<Vec<u8>>,
}

/// TPM2_PCR_Read's parameters: pcrUpdateCounter, pcrSelectionOut, pcrValues. The number of
/// digests must be the number of PCRs selected.
pub fn pcr_read_response(params: &[u8]) -> Result<PcrReadResponse, ResponseError> {
    let mut r = Reader::new("TPM2_PCR_Read response", params);
    let update_counter = r.u32("pcrUpdateCounter")?;
    let selection = PcrSelection::read(&mut r)?;
    r.set_structure("TPML_DIGEST");
    let count = r.u32("count")?;
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > MAX_DIGESTS {
        return Err(ParseError::TooLarge {
            structure: "TPML_DIGEST",
            field: "count",
            len: n,
            max: MAX_DIGESTS,
        }
        .into());
    }
    let mut digests = Vec::with_capacity(n);
    for _ in 0..n {
        digests.push(r.tpm2b("digests", MAX_DIGEST_SIZE)?.to_vec());
    }
    r.finish()?;
    if selection.iter().count() != n {
        return Err(ResponseError::Inconsistent(
            "PCR_Read returned a different number of digests than PCRs selected",
        ));
    }
    Ok(PcrReadResponse {
        update_counter,
        selection,
        digests,
    })
}

/// TPM2_GetCapability(TPM_CAP_PCRS)'s parameters: the banks (TPM_ALG_ID) that have at least
/// one PCR allocated, in the TPM's order. Banks of algorithms this crate does not know are
/// returned too (as raw identifiers) for the caller to skip.
pub fn pcr_banks_response(params: &[u8]) -> Result<Vec<u16>, ResponseError> {
    let mut r = Reader::new("TPM2_GetCapability(PCRS) response", params);
    r.u8("moreData")?;
    let cap = r.u32("capability")?;
    if cap != CAP_PCRS {
        return Err(ResponseError::Inconsistent(
            "GetCapability answered with another capability",
        ));
    }
    r.set_structure("TPML_PCR_SELECTION");
    let count = r.u32("count")?;
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > MAX_CAP_BANKS {
        return Err(ParseError::TooLarge {
            structure: "TPML_PCR_SELECTION",
            field: "count",
            len: n,
            max: MAX_CAP_BANKS,
        }
        .into());
    }
    let mut banks = Vec::with_capacity(n);
    for _ in 0..n {
        let alg = r.u16("hash")?;
        let size = r.u8("sizeofSelect")?;
        let select = r.bounded(usize::from(size), "pcrSelect", 32)?;
        if select.iter().any(|b| *b != 0) {
            banks.push(alg);
        }
    }
    r.finish()?;
    Ok(banks)
}

/// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES)'s parameters: the value of `property`, or
/// `None` when the TPM did not report it.
pub fn tpm_property_response(params: &[u8], property: u32) -> Result<Option<u32>, ResponseError> {
    let mut r = Reader::new("TPM2_GetCapability(TPM_PROPERTIES) response", params);
    r.u8("moreData")?;
    let cap = r.u32("capability")?;
    if cap != CAP_TPM_PROPERTIES {
        return Err(ResponseError::Inconsistent(
            "GetCapability answered with another capability",
        ));
    }
    r.set_structure("TPML_TAGGED_TPM_PROPERTY");
    let count = r.u32("count")?;
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > MAX_CAP_PROPERTIES {
        return Err(ParseError::TooLarge {
            structure: "TPML_TAGGED_TPM_PROPERTY",
            field: "count",
            len: n,
            max: MAX_CAP_PROPERTIES,
        }
        .into());
    }
    let mut found = None;
    for _ in 0..n {
        let tag = r.u32("property")?;
        let value = r.u32("value")?;
        if tag == property && found.is_none() {
            found = Some(value);
        }
    }
    r.finish()?;
    Ok(found)
}

/// TPM2_NV_ReadPublic's parameters: the index's dataSize (how many bytes to read).
pub fn nv_read_public_response(params: &[u8], index: u32) -> Result<u16, ResponseError> {
    let mut r = Reader::new("TPM2_NV_ReadPublic response", params);
    let len = usize::from(r.u16("nvPublic.size")?);
    let mut p = r.sub(len, "TPMS_NV_PUBLIC")?;
    let got = p.u32("nvIndex")?;
    HashAlg::from_tpm(p.u16("nameAlg")?, "TPMS_NV_PUBLIC", "nameAlg")?;
    p.u32("attributes")?;
    p.tpm2b("authPolicy", MAX_DIGEST_SIZE)?;
    let size = p.u16("dataSize")?;
    p.finish()?;
    r.tpm2b("nvName", MAX_NAME_SIZE)?;
    r.finish()?;
    if got != index {
        return Err(ResponseError::Inconsistent(
            "NV_ReadPublic described another index than the one asked for",
        ));
    }
    Ok(size)
}

/// TPM2_NV_Read's parameters: the data read.
pub fn nv_read_response(params: &[u8]) -> Result<Vec<u8>, ResponseError> {
    let mut r = Reader::new("TPM2_NV_Read response", params);
    let data = r.tpm2b("data", MAX_NV_BUFFER_SIZE)?.to_vec();
    r.finish()?;
    Ok(data)
}

/// The policy digest after TPM2_PolicySecret with an entity whose name is its handle
/// (a hierarchy) and an empty policyRef, starting from `old` (TPM 2.0 Part 3, 23.4):
/// H(H(old || TPM_CC_PolicySecret || name) || policyRef).
pub fn policy_secret_digest(alg: HashAlg, old: &[u8], handle: u32) -> Vec<u8> {
    let cc = (CommandCode::PolicySecret as u32).to_be_bytes();
    let first = alg.hash_parts(&[old, &cc, &handle.to_be_bytes()]);
    alg.hash(first.as_bytes()).as_bytes().to_vec()
}

/// The policy digest after TPM2_PolicyOR over `branches` (TPM 2.0 Part 3, 23.6): the
/// digest is reset, then H(0...0 || TPM_CC_PolicyOR || branches...).
pub fn policy_or_digest(alg: HashAlg, branches: &[&[u8]]) -> Vec<u8> {
    let zero = vec![0u8; alg.size()];
    let cc = (CommandCode::PolicyOr as u32).to_be_bytes();
    let mut parts: Vec<&[u8]> = vec![&zero, &cc];
    parts.extend_from_slice(branches);
    alg.hash_parts(&parts).as_bytes().to_vec()
}

/// Decodes `bytes` as the response to `code` and then its parameters; for the fuzz target
/// (every decoder, one entry point). Never panics.
#[doc(hidden)]
pub fn fuzz_decode(code: CommandCode, sessions: bool, bytes: &[u8]) {
    let Ok(resp) = Response::parse(bytes, code, sessions) else {
        return;
    };
    let p = resp.params;
    let _ = match code {
        CommandCode::CreatePrimary => create_primary_response(p).map(drop),
        CommandCode::ReadPublic => read_public_response(p).map(drop),
        CommandCode::Create => create_response(p).map(drop),
        CommandCode::Load => load_response(p).map(drop),
        CommandCode::StartAuthSession => start_auth_session_response(p),
        CommandCode::PolicySecret => policy_secret_response(p),
        CommandCode::ActivateCredential => activate_credential_response(p).map(drop),
        CommandCode::Quote => quote_response(p).map(drop),
        CommandCode::PcrRead => pcr_read_response(p).map(drop),
        CommandCode::GetCapability => pcr_banks_response(p)
            .map(drop)
            .and_then(|()| tpm_property_response(p, PT_NV_BUFFER_MAX).map(drop)),
        CommandCode::NvReadPublic => nv_read_public_response(p, 0x01c0_0002).map(drop),
        CommandCode::NvRead => nv_read_response(p).map(drop),
        CommandCode::EvictControl
        | CommandCode::FlushContext
        | CommandCode::PcrExtend
        | CommandCode::PolicyOr => empty_response(p),
    };
}

/// Every command code, for the fuzz target to pick from.
#[doc(hidden)]
pub const ALL_CODES: [CommandCode; 16] = [
    CommandCode::EvictControl,
    CommandCode::CreatePrimary,
    CommandCode::ActivateCredential,
    CommandCode::NvRead,
    CommandCode::PolicySecret,
    CommandCode::Create,
    CommandCode::Load,
    CommandCode::Quote,
    CommandCode::FlushContext,
    CommandCode::NvReadPublic,
    CommandCode::PolicyOr,
    CommandCode::ReadPublic,
    CommandCode::StartAuthSession,
    CommandCode::GetCapability,
    CommandCode::PcrRead,
    CommandCode::PcrExtend,
];

/// Splits concatenated DER values (each a SEQUENCE with a definite length, as certificates
/// are), such as an EK certificate chain NV index holds; `None` when the bytes are not
/// exactly that. Only the outer headers are read; the certificates are parsed by whoever
/// checks them.
pub fn split_der_values(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (&tag, rest) = bytes.split_first()?;
        if tag != 0x30 {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 3 {
                return None;
            }
            let len_bytes = rest.get(..n)?;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, 2 + n)
        };
        let total = header.checked_add(len)?;
        let (one, rest) = bytes.split_at_checked(total)?;
        out.push(one);
        bytes = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
