//! TPM2_Quote with the AK, returned as the exact bytes the server verifies.
//!
//! The TPM's TPMS_ATTEST and TPMT_SIGNATURE are kept as the TPM marshalled them (the
//! signature covers those bytes), parsed with `verifier-core` on the way in, and checked
//! (extraData, and with [`Tpm::quote_with_pcrs`] signature and PCR digest) before anything
//! is sent. A quote that does not verify here would not verify on the server either.

use verifier_core::quote::{verify_quote, AkPublic, VerifyError};
use verifier_core::tpm2::{self, Auth, Command, CommandCode, ALG_ECDSA, ALG_RSASSA};
use verifier_core::wire::{Attest, HashAlg, PcrSelection, PcrValues, Public, PublicKey, Signature};

use super::{Ak, Tpm, TpmError};

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
    /// TPM2_Quote over `selection` with `ak`, SHA-256 with the AK's kind of signature
    /// (ECDSA for the agent's own ECC AK, RSASSA for an RSA AK such as an Azure vTPM's),
    /// qualifyingData = `extra_data`.
    pub fn quote(
        &mut self,
        ak: &Ak,
        extra_data: &[u8; 32],
        selection: &PcrSelection,
    ) -> Result<Quote, TpmError> {
        let scheme = match Public::parse(ak.public()) {
            Ok(p) if matches!(p.key(), PublicKey::Rsa { .. }) => ALG_RSASSA,
            _ => ALG_ECDSA,
        };
        let mut c = Command::new(CommandCode::Quote)
            .handle(ak.handle)
            .auth(Auth::password());
        let p = c.params();
        p.tpm2b(extra_data)
            .u16(scheme)
            .u16(HashAlg::Sha256.to_tpm());
        selection.write(p);
        let q = self.run("Quote", &c, |_, p| tpm2::quote_response(p))?;
        let parsed = Attest::parse(&q.attest).map_err(TpmError::Remarshal)?;
        if parsed.extra_data != extra_data {
            return Err(TpmError::BadOutput {
                what: "Quote",
                reason: "the TPMS_ATTEST does not carry the qualifyingData we asked for",
            });
        }
        Ok(Quote {
            attest: q.attest,
            signature: q.signature,
        })
    }

    /// The machine's signature of `digest`: a quote by `ak` whose qualifyingData is the
    /// digest. The AK is restricted, so only this TPM can make it; the PCRs (sha256:0, any
    /// would do) are not judged. Used for requests made on the installed system (a pending
    /// policy change, an auto-enrollment deposit).
    pub fn sign_with_quote(
        &mut self,
        ak: &Ak,
        digest: &[u8; 32],
    ) -> Result<(QuotedPcrs, PcrSelection), TpmError> {
        let selection = verifier_core::wire::BankSelection::new(HashAlg::Sha256, &[0])
            .and_then(|b| PcrSelection::new(vec![b]))
            .ok_or(TpmError::BadOutput {
                what: "Quote (signature of a request)",
                reason: "the sha256:0 selection could not be built",
            })?;
        let quoted = self.quote_with_pcrs(ak, digest, &selection)?;
        Ok((quoted, selection))
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
