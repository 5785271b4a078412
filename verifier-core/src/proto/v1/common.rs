//! Types shared by several v1 messages.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proto::ProtoError;
use crate::wire::{HashAlg, PCR_COUNT};

/// Hash algorithms travel by their lowercase name (`"sha256"`); anything else is refused.
impl Serialize for HashAlg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for HashAlg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        HashAlg::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom("unknown hash algorithm (sha1, sha256, sha384, sha512)")
        })
    }
}

/// The kind of evidence an enrollment declares; the server picks the verifier by it.
/// Serialized as its name (`"tpm"`, `"azure-snp-vtpm"`); `"snp-vtpm"` is accepted as
/// another name of `azure-snp-vtpm` (the only SEV-SNP vTPM this build verifies).
/// Defined here, with the wire types, because the admin API carries it; the verifiers
/// are in `attester` (server builds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EvidenceKind {
    /// A TPM 2.0 quote by an AK activated with the enrolled EK (MakeCredential); the
    /// default of an enrollment that does not say.
    #[default]
    Tpm,
    /// An Azure SEV-SNP confidential VM: vTPM quote by the AK in the HCL report.
    #[serde(alias = "snp-vtpm")]
    AzureSnpVtpm,
    /// TEST ONLY: a TPM quote plus the answer to a challenge round (verifier-made
    /// parameters sealed to a test attester's key, see [`crate::round`]). A server accepts
    /// it only when started with `--test-attester-key`; it exists to prove the round on the
    /// wire until an attester with real public evidence (IBM Secure Execution) is built.
    TestChallengeRound,
}

impl EvidenceKind {
    /// The name used in enrollments and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tpm => "tpm",
            Self::AzureSnpVtpm => "azure-snp-vtpm",
            Self::TestChallengeRound => "test-challenge-round",
        }
    }

    /// Whether registration proves the AK with MakeCredential against an EK. For a vTPM
    /// bound to a CPU report the report proves the AK instead.
    pub fn needs_make_credential(self) -> bool {
        matches!(self, Self::Tpm | Self::TestChallengeRound)
    }

    /// Whether the challenge carries verifier-made parameters and the attest request must
    /// carry the attester's answer ([`crate::round`]).
    pub fn needs_challenge_round(self) -> bool {
        matches!(self, Self::TestChallengeRound)
    }
}

impl fmt::Display for EvidenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An evidence kind name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown evidence kind {0:?} (known: tpm, azure-snp-vtpm or its short name snp-vtpm, test-challenge-round)")]
pub struct UnknownEvidenceKind(pub String);

impl std::str::FromStr for EvidenceKind {
    type Err = UnknownEvidenceKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tpm" => Ok(Self::Tpm),
            "azure-snp-vtpm" | "snp-vtpm" => Ok(Self::AzureSnpVtpm),
            "test-challenge-round" => Ok(Self::TestChallengeRound),
            other => Err(UnknownEvidenceKind(other.to_owned())),
        }
    }
}

impl EvidenceKind {
    /// True for the default kind (so the admin API omits it, as older servers expect).
    pub fn is_tpm(&self) -> bool {
        matches!(self, Self::Tpm)
    }
}

/// An agent identity: 64 lowercase hex characters (see [`crate::proto::agent_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    /// The identity of the EK whose marshalled TPMT_PUBLIC is `ek_tpmt_public`.
    pub fn of_ek(ek_tpmt_public: &[u8]) -> Self {
        Self(crate::proto::agent_id(ek_tpmt_public))
    }

    /// The identity of the EK whose TPM name is `name`, when its name algorithm is SHA-256:
    /// that name's digest is the SHA-256 of the TPMT_PUBLIC, so a TPM that keeps the EK
    /// gives the agent id without a second read of the public area. `None` otherwise.
    pub fn of_ek_name(name: &[u8]) -> Option<Self> {
        let digest = name.strip_prefix(&HashAlg::Sha256.to_tpm().to_be_bytes())?;
        let d = crate::wire::Digest::from_slice(HashAlg::Sha256, digest)?;
        Some(Self(d.to_hex()))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentId {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() == 64
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            Ok(Self(s))
        } else {
            Err("agent_id must be 64 lowercase hex characters")
        }
    }
}

impl From<AgentId> for String {
    fn from(a: AgentId) -> String {
        a.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server-chosen identifier (registration, challenge): 1 to 64 characters of
/// `[A-Za-z0-9_-]`, opaque to the agent. Safe to log and to put in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Id(String);

impl Id {
    /// Largest identifier length.
    pub const MAX_LEN: usize = 64;

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Id {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if ok {
            Ok(Self(s))
        } else {
            Err("identifier must be 1-64 characters of [A-Za-z0-9_-]")
        }
    }
}

impl From<Id> for String {
    fn from(a: Id) -> String {
        a.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A role that releases a key half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds V and the payload ciphertext.
    Verifier,
    /// Holds U.
    Tenant,
}

impl Role {
    /// Canonical lowercase name (`verifier`, `tenant`): the JSON spelling, the URL prefix of
    /// the role's API, and the role string in the share's HPKE `info` and wrapping context.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verifier => "verifier",
            Self::Tenant => "tenant",
        }
    }

    /// The role's leaf in the agent's Merkle tree of nonces.
    pub fn leaf_index(self) -> u32 {
        match self {
            Self::Verifier => 0,
            Self::Tenant => 1,
        }
    }
}

/// PCRs of one bank to quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrSelection {
    /// The bank.
    pub hash: HashAlg,
    /// PCR indexes, strictly increasing, each below 24.
    pub pcrs: Vec<u8>,
}

/// Checks a list of selections: at least one, banks unique, indexes strictly increasing and
/// below 24, none empty.
pub(super) fn validate_selection(
    sel: &[PcrSelection],
    field: &'static str,
    index_field: &'static str,
) -> Result<(), ProtoError> {
    if sel.is_empty() {
        return Err(ProtoError::Invalid {
            field,
            reason: "must select at least one bank",
        });
    }
    if sel.len() > HashAlg::ALL.len() {
        return Err(ProtoError::TooLarge {
            field,
            len: sel.len(),
            max: HashAlg::ALL.len(),
        });
    }
    for (i, s) in sel.iter().enumerate() {
        if sel.iter().take(i).any(|o| o.hash == s.hash) {
            return Err(ProtoError::Invalid {
                field,
                reason: "a bank appears twice",
            });
        }
        validate_indexes(s.pcrs.iter().copied(), index_field)?;
    }
    Ok(())
}

/// Indexes must be non-empty, strictly increasing and below 24.
fn validate_indexes(
    indexes: impl Iterator<Item = u8>,
    field: &'static str,
) -> Result<(), ProtoError> {
    let mut last: Option<u8> = None;
    for i in indexes {
        if i >= PCR_COUNT {
            return Err(ProtoError::Invalid {
                field,
                reason: "PCR index must be below 24",
            });
        }
        if last.is_some_and(|l| l >= i) {
            return Err(ProtoError::Invalid {
                field,
                reason: "PCR indexes must be strictly increasing",
            });
        }
        last = Some(i);
    }
    if last.is_none() {
        return Err(ProtoError::Invalid {
            field,
            reason: "must list at least one PCR",
        });
    }
    Ok(())
}
