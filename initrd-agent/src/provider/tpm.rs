//! The host TPM as a [`HostQuoter`]: one EK, one AK under it, quotes through one context.
//!
//! The connection lives on the batching engine's worker thread, so quotes are serialized
//! through it by construction.

use verifier_core::provider::host_extra_data;
use verifier_core::wire::PcrSelection;

use super::batch::{HostQuote, HostQuoter};
use crate::tpm::{Ak, Ek, EkKind, Tpm, TpmError};

/// The host TPM with a loaded AK and the PCR selection every quote covers.
#[derive(Debug)]
pub struct TpmQuoter {
    tpm: Tpm,
    // Kept loaded as the AK's parent for the life of the provider.
    _ek: Ek,
    ak: Ak,
    selection: PcrSelection,
}

impl TpmQuoter {
    /// Opens the TPM, creates the EK of `ek_kind` and a fresh AK under it.
    ///
    /// The AK is new on every start, so requesters re-pin it after a provider restart
    /// (`GET /v1/provider/ak`); see `docs/provider.md`.
    pub fn open(tcti: &str, ek_kind: EkKind, selection: PcrSelection) -> Result<Self, TpmError> {
        let mut tpm = Tpm::open(tcti)?;
        let ek = tpm.create_ek(ek_kind)?;
        let ak = tpm.create_ak(&ek)?;
        // Fail at startup, not at the first request, when a bank is not allocated.
        tpm.read_pcrs(&selection)?;
        Ok(Self {
            tpm,
            _ek: ek,
            ak,
            selection,
        })
    }
}

impl HostQuoter for TpmQuoter {
    type Error = TpmError;

    fn quote(&mut self, root: &[u8; 32]) -> Result<HostQuote, TpmError> {
        // Quotes, reads the PCRs and checks them against each other with verifier-core, so
        // the provider never hands out a quote its requesters would refuse.
        let extra_data = host_extra_data(root);
        let q = self
            .tpm
            .quote_with_pcrs(&self.ak, &extra_data, &self.selection)?;
        Ok(HostQuote {
            attest: q.quote.attest,
            signature: q.quote.signature,
            pcrs: q.pcrs,
            host: None,
        })
    }

    fn ak_public(&self) -> Vec<u8> {
        self.ak.public().to_vec()
    }
}
