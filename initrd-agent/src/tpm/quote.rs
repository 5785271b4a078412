//! TPM2_Quote with the AK, returned as the exact bytes the server verifies.
//!
//! tss-esapi hands back the quote as parsed structures; the signature covers the TPM's
//! marshalling of TPMS_ATTEST, so the agent re-marshals it and immediately checks the result
//! with `verifier-core` (parse, signature, extraData, PCR digest) before sending anything. A
//! quote that does not verify here would not verify on the server either.

use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Data, HashScheme, SignatureScheme};
use tss_esapi::traits::Marshall;
use verifier_core::quote::{verify_quote, AkPublic, VerifyError};
use verifier_core::wire::{Attest, PcrSelection, PcrValues, Public, Signature};

use super::{cmd, Ak, Tpm, TpmError};

/// A quote as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// TPMS_ATTEST exactly as signed (no TPM2B size prefix).
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
}

/// A quote and the PCR values it covers, checked against each other.
#[derive(Debug, Clone)]
pub struct QuotedPcrs {
    /// The quote.
    pub quote: Quote,
    /// Values of every quoted PCR, read after the quote.
    pub pcrs: PcrValues,
}

impl Tpm {
    /// TPM2_Quote over `selection` with `ak`, ECDSA-SHA256, qualifyingData = `extra_data`.
    pub fn quote(
        &mut self,
        ak: &Ak,
        extra_data: &[u8; 32],
        selection: &PcrSelection,
    ) -> Result<Quote, TpmError> {
        let tss_sel = super::pcr::to_tss_selection(selection)?;
        let data = Data::try_from(extra_data.to_vec()).map_err(cmd("qualifyingData"))?;
        let scheme = SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };
        let (attest, signature) = self
            .ctx
            .execute_with_session(super::auth::PASSWORD, |ctx| {
                ctx.quote(ak.handle, data, scheme, tss_sel)
            })
            .map_err(cmd("Quote"))?;
        self.sent(1);
        let attest = attest.marshall().map_err(cmd("marshal TPMS_ATTEST"))?;
        let signature = signature
            .marshall()
            .map_err(cmd("marshal TPMT_SIGNATURE"))?;
        // What we send must parse with the server's parser; extraData must be ours.
        let parsed = Attest::parse(&attest).map_err(TpmError::Remarshal)?;
        Signature::parse(&signature).map_err(TpmError::Remarshal)?;
        if parsed.extra_data != extra_data {
            return Err(TpmError::BadOutput {
                what: "Quote",
                reason: "the TPMS_ATTEST does not carry the qualifyingData we asked for",
            });
        }
        Ok(Quote { attest, signature })
    }

    /// Quotes, then reads the quoted PCRs and checks them against the quote with
    /// `verifier-core`'s [`verify_quote`]. A PCR extended between the quote and the read
    /// (another initrd service measuring something) makes the digest differ; the agent then
    /// quotes once more. Any other failure, or a second mismatch, is an error.
    pub fn quote_with_pcrs(
        &mut self,
        ak: &Ak,
        extra_data: &[u8; 32],
        selection: &PcrSelection,
    ) -> Result<QuotedPcrs, TpmError> {
        let ak_pub = Public::parse(ak.public())
            .map_err(TpmError::Remarshal)
            .and_then(|p| AkPublic::try_from(p).map_err(TpmError::AkRefused))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let quote = self.quote(ak, extra_data, selection)?;
            let pcrs = self.read_pcrs(selection)?;
            let sig = Signature::parse(&quote.signature).map_err(TpmError::Remarshal)?;
            match verify_quote(&ak_pub, extra_data, &quote.attest, &sig, &pcrs) {
                Ok(_) => return Ok(QuotedPcrs { quote, pcrs }),
                Err(VerifyError::PcrDigestMismatch) if attempt < 2 => continue,
                Err(e) => return Err(TpmError::QuoteCheck(e)),
            }
        }
    }
}
