//! TPMS_ATTEST (TPM 2.0 Part 2, 10.12.12): what a TPM signs when it quotes.
//!
//! Parsing is structural: a wrong magic or a non-quote type parses fine and is refused by
//! quote verification with its own error, so the reason a quote fails is always precise.

use super::{Digest, PcrSelection, Reader, Writer, MAX_DIGEST_SIZE};
use crate::ParseError;

const S: &str = "TPMS_ATTEST";

/// TPM_GENERATED_VALUE: the first four bytes of everything the TPM signs about itself.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
const TPM_ST_ATTEST_CREATION: u16 = 0x801a;

/// Bound of TPM2B_NAME (sizeof(TPMU_NAME) = 2 + the largest digest).
pub const MAX_NAME_SIZE: usize = 2 + MAX_DIGEST_SIZE;
/// Bound of TPM2B_DATA (sizeof(TPMT_HA)).
pub const MAX_DATA_SIZE: usize = 2 + MAX_DIGEST_SIZE;
/// Our bound for the opaque body of attestation types we do not model.
const MAX_OTHER_BODY: usize = 1024;

/// TPMS_CLOCK_INFO: the TPM's clock and boot counters at signing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since its last clear (TPM time, not wall time).
    pub clock: u64,
    /// TPM Reset count: increases on every reboot; a boot session is keyed by it.
    pub reset_count: u32,
    /// TPM Restart (resume from hibernation) count within this reset.
    pub restart_count: u32,
    /// True when `clock` cannot have been rolled back since it was last reported.
    pub safe: bool,
}

impl ClockInfo {
    fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => return Err(r.invalid("clockInfo.safe", u64::from(v))),
        };
        Ok(Self {
            clock,
            reset_count,
            restart_count,
            safe,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.u64(self.clock)
            .u32(self.reset_count)
            .u32(self.restart_count)
            .u8(u8::from(self.safe));
    }
}

/// TPMS_QUOTE_INFO: which PCRs were quoted and the digest of their values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuoteInfo {
    /// The quoted PCRs.
    pub pcr_select: PcrSelection,
    /// H(selected PCR values), as a raw TPM2B_DIGEST (its length is checked at verification
    /// against the signing hash).
    pub pcr_digest: Vec<u8>,
}

/// The type-specific part of a TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attested {
    /// TPM_ST_ATTEST_QUOTE.
    Quote(QuoteInfo),
    /// TPM_ST_ATTEST_CERTIFY: TPMS_CERTIFY_INFO.
    Certify {
        /// Name of the certified object.
        name: Vec<u8>,
        /// Qualified name of the certified object.
        qualified_name: Vec<u8>,
    },
    /// TPM_ST_ATTEST_CREATION: TPMS_CREATION_INFO.
    Creation {
        /// Name of the created object.
        object_name: Vec<u8>,
        /// Digest of the creation data.
        creation_hash: Vec<u8>,
    },
    /// Any other TPMI_ST_ATTEST, kept as opaque bytes (bounded) so it round-trips.
    Other {
        /// The TPM_ST value.
        tag: u16,
        /// Everything after `firmwareVersion`.
        body: Vec<u8>,
    },
}

/// A TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attest {
    /// Must be [`TPM_GENERATED_VALUE`] for anything the TPM produced.
    pub magic: u32,
    /// Name of the signing key (TPM2B_NAME).
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (our nonce binding), TPM2B_DATA.
    pub extra_data: Vec<u8>,
    /// Clock and boot counters.
    pub clock_info: ClockInfo,
    /// Vendor firmware version.
    pub firmware_version: u64,
    /// Type-specific information.
    pub attested: Attested,
}

impl Attest {
    /// Parses a TPMS_ATTEST that fills `bytes` exactly (the bytes the signature covers).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(S, bytes);
        let a = Self::read(&mut r)?;
        r.finish()?;
        Ok(a)
    }

    /// Parses a TPM2B_ATTEST and returns the structure and the inner TPMS_ATTEST bytes (which
    /// is what the signature covers).
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<(Self, &[u8]), ParseError> {
        let mut outer = Reader::new("TPM2B_ATTEST", bytes);
        let inner = outer.tpm2b("size", MAX_ATTEST_SIZE)?;
        outer.finish()?;
        Ok((Self::parse(inner)?, inner))
    }

    /// Reads one TPMS_ATTEST.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ParseError> {
        let magic = r.u32("magic")?;
        let tag = r.u16("type")?;
        let qualified_signer = r.tpm2b("qualifiedSigner", MAX_NAME_SIZE)?.to_vec();
        let extra_data = r.tpm2b("extraData", MAX_DATA_SIZE)?.to_vec();
        let clock_info = ClockInfo::read(r)?;
        let firmware_version = r.u64("firmwareVersion")?;
        let attested = match tag {
            TPM_ST_ATTEST_QUOTE => {
                let pcr_select = PcrSelection::read(r)?;
                let pcr_digest = r
                    .tpm2b("attested.quote.pcrDigest", MAX_DIGEST_SIZE)?
                    .to_vec();
                Attested::Quote(QuoteInfo {
                    pcr_select,
                    pcr_digest,
                })
            }
            TPM_ST_ATTEST_CERTIFY => Attested::Certify {
                name: r.tpm2b("attested.certify.name", MAX_NAME_SIZE)?.to_vec(),
                qualified_name: r
                    .tpm2b("attested.certify.qualifiedName", MAX_NAME_SIZE)?
                    .to_vec(),
            },
            TPM_ST_ATTEST_CREATION => Attested::Creation {
                object_name: r
                    .tpm2b("attested.creation.objectName", MAX_NAME_SIZE)?
                    .to_vec(),
                creation_hash: r
                    .tpm2b("attested.creation.creationHash", MAX_DIGEST_SIZE)?
                    .to_vec(),
            },
            0x8014..=0x801a => {
                let n = r.remaining();
                Attested::Other {
                    tag,
                    body: r.bounded(n, "attested", MAX_OTHER_BODY)?.to_vec(),
                }
            }
            v => return Err(r.invalid("type", u64::from(v))),
        };
        Ok(Self {
            magic,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            attested,
        })
    }

    /// The TPM_ST type tag.
    pub fn tag(&self) -> u16 {
        match &self.attested {
            Attested::Quote(_) => TPM_ST_ATTEST_QUOTE,
            Attested::Certify { .. } => TPM_ST_ATTEST_CERTIFY,
            Attested::Creation { .. } => TPM_ST_ATTEST_CREATION,
            Attested::Other { tag, .. } => *tag,
        }
    }

    /// Appends the TPMS_ATTEST.
    pub fn write(&self, w: &mut Writer) {
        w.u32(self.magic)
            .u16(self.tag())
            .tpm2b(&self.qualified_signer)
            .tpm2b(&self.extra_data);
        self.clock_info.write(w);
        w.u64(self.firmware_version);
        match &self.attested {
            Attested::Quote(q) => {
                q.pcr_select.write(w);
                w.tpm2b(&q.pcr_digest);
            }
            Attested::Certify {
                name,
                qualified_name,
            } => {
                w.tpm2b(name).tpm2b(qualified_name);
            }
            Attested::Creation {
                object_name,
                creation_hash,
            } => {
                w.tpm2b(object_name).tpm2b(creation_hash);
            }
            Attested::Other { body, .. } => {
                w.bytes(body);
            }
        }
    }

    /// The marshalled TPMS_ATTEST (what a TPM signs).
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }

    /// A quote body as a TPM would produce it: correct magic and type, `pcr_digest` computed
    /// by the caller (see [`PcrSelection::digest`]).
    pub fn new_quote(
        qualified_signer: &[u8],
        extra_data: &[u8],
        clock_info: ClockInfo,
        firmware_version: u64,
        pcr_select: PcrSelection,
        pcr_digest: &Digest,
    ) -> Self {
        Self {
            magic: TPM_GENERATED_VALUE,
            qualified_signer: qualified_signer.to_vec(),
            extra_data: extra_data.to_vec(),
            clock_info,
            firmware_version,
            attested: Attested::Quote(QuoteInfo {
                pcr_select,
                pcr_digest: pcr_digest.as_bytes().to_vec(),
            }),
        }
    }
}

/// Our bound on a TPM2B_ATTEST's size (sizeof(TPMS_ATTEST) in the reference TPM is below it).
pub const MAX_ATTEST_SIZE: usize = 2048;
