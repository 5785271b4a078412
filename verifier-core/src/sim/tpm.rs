//! The simulated TPM: an ECC P-256 EK with the TCG default template, TPM2_ActivateCredential
//! in software, a SHA-256 PCR bank and the clock a quote reports.

use std::fmt;

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::SimError;
use crate::makecred::aes_cfb_decrypt;
use crate::makecred::kdf::{hmac, kdfa, kdfe};
use crate::proto::v1::AgentId;
use crate::quote::software::SoftwareAk;
use crate::wire::{
    ClockInfo, Digest, EccCurve, HashAlg, KdfScheme, KeyScheme, ObjectAttributes, PcrSelection,
    PcrValues, Public, PublicKey, Reader, Signature, SymDef, SymMode, PCR_COUNT,
};

/// The authPolicy of the TCG default EK templates with a SHA-256 nameAlg: PolicySecret
/// (TPM_RH_ENDORSEMENT), "PolicyA" of the TCG EK Credential Profile (section B.3.2).
pub const EK_AUTH_POLICY_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// P-256 coordinate size.
const COORD: usize = 32;
/// SHA-256 digest size (the EK nameAlg).
const DIGEST: usize = 32;
/// Label of the ECC credential seed (KDFe appends the NUL).
const IDENTITY: &[u8] = b"IDENTITY";

/// The objectAttributes of the TCG default EK templates: fixedTPM, fixedParent,
/// sensitiveDataOrigin, adminWithPolicy, restricted, decrypt (0x000300b2).
pub fn ek_attributes() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::ADMIN_WITH_POLICY
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::DECRYPT
}

/// A software TPM with an ECC P-256 EK (TCG template L-2), one SHA-256 PCR bank of 24 PCRs
/// and a clock whose resetCount tests can set to simulate reboots.
pub struct SimTpm {
    ek_key: PrivateKey,
    ek: Public,
    ek_bytes: Vec<u8>,
    pcrs: PcrValues,
    clock: ClockInfo,
    firmware_version: u64,
}

impl fmt::Debug for SimTpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTpm")
            .field("ek", &self.ek)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl SimTpm {
    /// A fresh TPM: a new EK, PCRs at their reset values, resetCount 1.
    pub fn new() -> Result<Self, SimError> {
        let ek_key =
            PrivateKey::generate(&ECDH_P256).map_err(|_| SimError::Crypto("EK generation"))?;
        let point = ek_key
            .compute_public_key()
            .map_err(|_| SimError::Crypto("EK public key"))?;
        let (x, y) = match point.as_ref().split_first() {
            Some((0x04, xy)) if xy.len() == 2 * COORD => xy.split_at(COORD),
            _ => return Err(SimError::Crypto("EK public key encoding")),
        };
        let ek = Public::new(
            HashAlg::Sha256,
            ek_attributes(),
            &EK_AUTH_POLICY_SHA256,
            PublicKey::Ecc {
                symmetric: SymDef::Aes {
                    key_bits: 128,
                    mode: SymMode::Cfb,
                },
                scheme: KeyScheme::Null,
                curve: EccCurve::NistP256,
                kdf: KdfScheme::Null,
                x: x.to_vec(),
                y: y.to_vec(),
            },
        )?;
        let ek_bytes = ek.marshal();
        Ok(Self {
            ek_key,
            ek,
            ek_bytes,
            pcrs: reset_pcrs(),
            clock: ClockInfo {
                clock: 1_000,
                reset_count: 1,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 0x0001_0002_0003_0004,
        })
    }

    /// The EK's public area.
    pub fn ek_public(&self) -> &Public {
        &self.ek
    }

    /// The EK's marshalled TPMT_PUBLIC, as the agent sends it.
    pub fn ek_pub_bytes(&self) -> &[u8] {
        &self.ek_bytes
    }

    /// The agent identity of this TPM (SHA-256 of the EK's TPMT_PUBLIC).
    pub fn agent_id(&self) -> AgentId {
        AgentId::of_ek(&self.ek_bytes)
    }

    /// TPM2_ActivateCredential in software, with the protocol's framing: `credential_blob`
    /// is the TPM2B_ID_OBJECT contents and `encrypted_secret` the TPM2B_ENCRYPTED_SECRET
    /// contents, both without their size prefix. Recovers the credential only if it was
    /// made for this EK and for the object named `ak_name`.
    pub fn activate_credential(
        &self,
        ak_name: &[u8],
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SimError> {
        // TPMS_ECC_POINT: the ephemeral public key of MakeCredential.
        let mut r = Reader::new("TPMS_ECC_POINT", encrypted_secret);
        let eph_x = r.tpm2b("x", COORD)?;
        let eph_y = r.tpm2b("y", COORD)?;
        r.finish()?;
        let (Some(pad_x), Some(pad_y)) = (
            COORD.checked_sub(eph_x.len()),
            COORD.checked_sub(eph_y.len()),
        ) else {
            return Err(SimError::EccPoint);
        };
        let mut peer = Vec::with_capacity(1 + 2 * COORD);
        peer.push(0x04);
        peer.resize(1 + pad_x, 0);
        peer.extend_from_slice(eph_x);
        peer.resize(peer.len() + pad_y, 0);
        peer.extend_from_slice(eph_y);
        let ek_x = match self.ek.key() {
            PublicKey::Ecc { x, .. } => x.as_slice(),
            PublicKey::Rsa { .. } => return Err(SimError::Crypto("EK is not an ECC key")),
        };
        let bits = u32::try_from(DIGEST * 8).unwrap_or(u32::MAX);
        // aws-lc checks that the point is on the curve.
        let seed = agreement::agree(
            &self.ek_key,
            UnparsedPublicKey::new(&ECDH_P256, peer),
            SimError::EccPoint,
            |z| kdfe(HashAlg::Sha256, z, IDENTITY, eph_x, ek_x, bits).map_err(SimError::from),
        )?;

        // TPM2B_ID_OBJECT contents: TPM2B_DIGEST(integrityHMAC) || encIdentity.
        let mut r = Reader::new("TPM2B_ID_OBJECT", credential_blob);
        let integrity = r.tpm2b("integrityHMAC", DIGEST)?;
        let enc_identity = r.bounded(r.remaining(), "encIdentity", 2 + DIGEST)?;
        r.finish()?;

        let hmac_key = kdfa(HashAlg::Sha256, &seed, b"INTEGRITY", &[], &[], bits)?;
        let expected = hmac(HashAlg::Sha256, &hmac_key, &[enc_identity, ak_name]);
        if !bool::from(expected.as_slice().ct_eq(integrity)) {
            return Err(SimError::Integrity);
        }

        let sym_key = kdfa(HashAlg::Sha256, &seed, b"STORAGE", ak_name, &[], 128)?;
        let mut plain = Zeroizing::new(enc_identity.to_vec());
        aes_cfb_decrypt(&sym_key, &mut plain)?;
        let mut r = Reader::new("TPM2B_DIGEST", &plain);
        let len = usize::from(r.u16("size")?);
        if len > DIGEST {
            return Err(SimError::CredentialSize { len, max: DIGEST });
        }
        let credential = Zeroizing::new(r.take(len, "buffer")?.to_vec());
        r.finish()?;
        Ok(credential)
    }

    /// PCR `index` of the SHA-256 bank.
    pub fn pcr(&self, index: u8) -> Option<&Digest> {
        self.pcrs.get(HashAlg::Sha256, index)
    }

    /// Every PCR (the SHA-256 bank).
    pub fn pcrs(&self) -> &PcrValues {
        &self.pcrs
    }

    /// TPM2_PCR_Extend of the SHA-256 bank with a 32-byte digest.
    pub fn extend(&mut self, index: u8, digest: &[u8; 32]) -> Result<(), SimError> {
        let pcr = self
            .pcrs
            .entry_or(index, Digest::zero(HashAlg::Sha256))
            .ok_or(SimError::PcrIndex(index))?;
        pcr.extend(digest);
        Ok(())
    }

    /// Measures `data` into PCR `index` (extends with its SHA-256), as firmware does.
    pub fn measure(&mut self, index: u8, data: &[u8]) -> Result<(), SimError> {
        let d = HashAlg::Sha256.hash(data);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_bytes());
        self.extend(index, &digest)
    }

    /// The clock a quote reports now.
    pub fn clock_info(&self) -> ClockInfo {
        self.clock
    }

    /// Sets resetCount (a test may move it backwards to play a cleared TPM or a replay).
    pub fn set_reset_count(&mut self, reset_count: u32) {
        self.clock.reset_count = reset_count;
    }

    /// Sets clockInfo.safe.
    pub fn set_clock_safe(&mut self, safe: bool) {
        self.clock.safe = safe;
    }

    /// A TPM Reset (reboot): resetCount increments, restartCount returns to 0 and every PCR
    /// returns to its reset value. Keys derived from the endorsement seed (the EK) survive.
    pub fn reboot(&mut self) {
        self.clock.reset_count = self.clock.reset_count.saturating_add(1);
        self.clock.restart_count = 0;
        self.clock.clock = self.clock.clock.saturating_add(60_000);
        self.pcrs = reset_pcrs();
    }

    /// TPM2_Quote of `selection` (SHA-256 bank only) with the current PCR values and clock,
    /// signed by `ak`. Returns the TPMS_ATTEST as signed and its signature.
    pub fn quote(
        &mut self,
        ak: &SoftwareAk,
        extra_data: &[u8],
        selection: &PcrSelection,
    ) -> Result<(Vec<u8>, Signature), SimError> {
        if let Some(b) = selection
            .banks()
            .iter()
            .find(|b| b.hash() != HashAlg::Sha256)
        {
            return Err(SimError::Bank(b.hash()));
        }
        // A quote takes a few milliseconds of TPM time.
        self.clock.clock = self.clock.clock.saturating_add(5);
        Ok(ak.quote(
            extra_data,
            selection,
            &self.pcrs,
            self.clock,
            self.firmware_version,
        )?)
    }
}

/// PC Client reset values: PCRs 17-22 all ones (reset only by a dynamic launch), the others
/// zero.
fn reset_pcrs() -> PcrValues {
    let mut pcrs = PcrValues::new();
    for i in 0..PCR_COUNT {
        let v = if (17..=22).contains(&i) {
            Digest::filled(HashAlg::Sha256, 0xff)
        } else {
            Digest::zero(HashAlg::Sha256)
        };
        pcrs.insert(i, v);
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::makecred::make_credential;

    fn ak_name(tag: &[u8]) -> Vec<u8> {
        let mut n = vec![0x00, 0x0b];
        n.extend_from_slice(HashAlg::Sha256.hash(tag).as_bytes());
        n
    }

    /// TPM2B contents, as the protocol carries them.
    fn contents(tpm2b: &[u8]) -> &[u8] {
        &tpm2b[2..]
    }

    #[test]
    fn ek_is_the_tcg_default_ecc_template() {
        let tpm = SimTpm::new().unwrap();
        let ek = tpm.ek_public();
        assert_eq!(ek.attributes().bits(), 0x0003_00b2);
        assert_eq!(ek.auth_policy(), &EK_AUTH_POLICY_SHA256);
        assert_eq!(ek.name_alg(), HashAlg::Sha256);
        assert_eq!(
            ek.symmetric(),
            SymDef::Aes {
                key_bits: 128,
                mode: SymMode::Cfb
            }
        );
        assert_eq!(ek.ecc_curve(), Some(EccCurve::NistP256));
        assert_eq!(Public::parse(tpm.ek_pub_bytes()).unwrap(), *ek);
        assert_eq!(tpm.agent_id(), AgentId::of_ek(&ek.marshal()));
    }

    #[test]
    fn activate_recovers_make_credential_secret() {
        let tpm = SimTpm::new().unwrap();
        let name = ak_name(b"ak");
        let secret = [0x5au8; 32];
        let made = make_credential(tpm.ek_public(), &name, &secret).unwrap();
        let got = tpm
            .activate_credential(
                &name,
                contents(&made.credential_blob),
                contents(&made.encrypted_secret),
            )
            .unwrap();
        assert_eq!(got.as_slice(), &secret);
        // Shorter credentials are TPM2B_DIGESTs too.
        let made = make_credential(tpm.ek_public(), &name, b"abc").unwrap();
        let got = tpm
            .activate_credential(
                &name,
                contents(&made.credential_blob),
                contents(&made.encrypted_secret),
            )
            .unwrap();
        assert_eq!(got.as_slice(), b"abc");
    }

    #[test]
    fn credential_for_another_ak_name_is_refused() {
        let tpm = SimTpm::new().unwrap();
        let made = make_credential(tpm.ek_public(), &ak_name(b"ak"), &[1; 32]).unwrap();
        let err = tpm
            .activate_credential(
                &ak_name(b"other ak"),
                contents(&made.credential_blob),
                contents(&made.encrypted_secret),
            )
            .unwrap_err();
        assert!(matches!(err, SimError::Integrity), "{err}");
    }

    #[test]
    fn credential_for_another_ek_is_refused() {
        let tpm = SimTpm::new().unwrap();
        let other = SimTpm::new().unwrap();
        let name = ak_name(b"ak");
        let made = make_credential(other.ek_public(), &name, &[1; 32]).unwrap();
        let err = tpm
            .activate_credential(
                &name,
                contents(&made.credential_blob),
                contents(&made.encrypted_secret),
            )
            .unwrap_err();
        assert!(matches!(err, SimError::Integrity), "{err}");
    }

    #[test]
    fn tampered_blob_or_secret_is_refused() {
        let tpm = SimTpm::new().unwrap();
        let name = ak_name(b"ak");
        let made = make_credential(tpm.ek_public(), &name, &[7; 32]).unwrap();
        let blob = contents(&made.credential_blob);
        let secret = contents(&made.encrypted_secret);
        // Every byte of the blob (HMAC size, HMAC, encIdentity) is protected.
        for i in 0..blob.len() {
            let mut bad = blob.to_vec();
            bad[i] ^= 0x01;
            assert!(
                tpm.activate_credential(&name, &bad, secret).is_err(),
                "flipped blob byte {i} accepted"
            );
        }
        // A changed ephemeral point is off the curve or derives another seed.
        let mut bad = secret.to_vec();
        bad[10] ^= 0x01;
        let err = tpm.activate_credential(&name, blob, &bad).unwrap_err();
        assert!(
            matches!(err, SimError::EccPoint | SimError::Integrity),
            "{err}"
        );
        // Truncation and trailing bytes are malformed, not panics.
        assert!(matches!(
            tpm.activate_credential(&name, &blob[..blob.len() - 1], secret),
            Err(SimError::Integrity)
        ));
        let mut long = secret.to_vec();
        long.push(0);
        assert!(matches!(
            tpm.activate_credential(&name, blob, &long),
            Err(SimError::Malformed(_))
        ));
        assert!(matches!(
            tpm.activate_credential(&name, &[], secret),
            Err(SimError::Malformed(_))
        ));
    }

    #[test]
    fn pcrs_extend_and_reset() {
        let mut tpm = SimTpm::new().unwrap();
        assert_eq!(*tpm.pcr(0).unwrap(), Digest::zero(HashAlg::Sha256));
        assert_eq!(*tpm.pcr(17).unwrap(), Digest::filled(HashAlg::Sha256, 0xff));
        tpm.extend(15, &[1; 32]).unwrap();
        let mut expected = Digest::zero(HashAlg::Sha256);
        expected.extend(&[1; 32]);
        assert_eq!(*tpm.pcr(15).unwrap(), expected);
        assert!(matches!(
            tpm.extend(24, &[1; 32]),
            Err(SimError::PcrIndex(24))
        ));
        let before = tpm.clock_info().reset_count;
        tpm.reboot();
        assert_eq!(tpm.clock_info().reset_count, before + 1);
        assert_eq!(*tpm.pcr(15).unwrap(), Digest::zero(HashAlg::Sha256));
        tpm.set_reset_count(3);
        assert_eq!(tpm.clock_info().reset_count, 3);
    }

    #[test]
    fn quote_verifies_with_current_pcrs() {
        use crate::wire::BankSelection;
        let mut tpm = SimTpm::new().unwrap();
        tpm.measure(7, b"secure boot state").unwrap();
        let ak = SoftwareAk::generate_ecc_p256().unwrap();
        let sel = PcrSelection::new(vec![BankSelection::new(HashAlg::Sha256, &[7, 15]).unwrap()])
            .unwrap();
        let (attest, sig) = tpm.quote(&ak, &[9; 32], &sel).unwrap();
        let q = crate::quote::verify_quote(ak.ak(), &[9; 32], &attest, &sig, tpm.pcrs()).unwrap();
        assert_eq!(q.reset_count(), tpm.clock_info().reset_count);
        assert_eq!(q.pcrs().get(HashAlg::Sha256, 7), tpm.pcr(7));
        // Values changed after the quote no longer match it.
        let quoted = tpm.pcrs().clone();
        tpm.extend(7, &[2; 32]).unwrap();
        assert!(crate::quote::verify_quote(ak.ak(), &[9; 32], &attest, &sig, tpm.pcrs()).is_err());
        assert!(crate::quote::verify_quote(ak.ak(), &[9; 32], &attest, &sig, &quoted).is_ok());
        let sha1 =
            PcrSelection::new(vec![BankSelection::new(HashAlg::Sha1, &[7]).unwrap()]).unwrap();
        assert!(matches!(
            tpm.quote(&ak, &[9; 32], &sha1),
            Err(SimError::Bank(HashAlg::Sha1))
        ));
    }
}
