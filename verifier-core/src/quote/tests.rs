//! Forgery tests: each forges exactly one thing in an otherwise valid quote (re-signed by
//! the AK where the forgery is inside the signed bytes) and expects that check's error.

use super::software::{ak_attributes, SoftwareAk};
use super::*;
use crate::wire::{
    BankSelection, EccCurve, KdfScheme, KeyScheme, ObjectAttributes, Public, PublicKey, SymDef,
};
use crate::ParseError;

const NONCE: &[u8] = b"0123456789abcdef0123456789abcdef";

fn pcrs() -> (PcrSelection, PcrValues) {
    let mut v = PcrValues::new();
    for i in 0..24u8 {
        v.insert(i, HashAlg::Sha256.hash(&[i]));
        v.insert(i, HashAlg::Sha1.hash(&[i]));
    }
    let sel = PcrSelection::new(vec![
        BankSelection::new(HashAlg::Sha1, &[7]).unwrap(),
        BankSelection::new(HashAlg::Sha256, &[0, 4, 7, 15]).unwrap(),
    ])
    .unwrap();
    (sel, v)
}

fn clock() -> ClockInfo {
    ClockInfo {
        clock: 123_456,
        reset_count: 7,
        restart_count: 1,
        safe: false,
    }
}

fn quote_with(ak: &SoftwareAk) -> (Vec<u8>, Signature, PcrValues) {
    let (sel, v) = pcrs();
    let (attest, sig) = ak.quote(NONCE, &sel, &v, clock(), 0x0102).unwrap();
    (attest, sig, v)
}

/// Re-signs `attest` after `edit` changes its parsed form.
fn forge(ak: &SoftwareAk, attest: &[u8], edit: impl FnOnce(&mut Attest)) -> (Vec<u8>, Signature) {
    let mut a = Attest::parse(attest).unwrap();
    edit(&mut a);
    let bytes = a.marshal();
    let sig = ak.sign(&bytes).unwrap();
    (bytes, sig)
}

fn both() -> [SoftwareAk; 2] {
    [
        SoftwareAk::generate_ecc_p256().unwrap(),
        SoftwareAk::generate_rsa_2048().unwrap(),
    ]
}

#[test]
fn valid_quote_exposes_signed_fields() {
    for ak in both() {
        let (attest, sig, v) = quote_with(&ak);
        let q = verify_quote(ak.ak(), NONCE, &attest, &sig, &v).unwrap();
        assert_eq!(q.reset_count(), 7);
        assert_eq!(q.restart_count(), 1);
        assert_eq!(q.clock(), 123_456);
        assert!(!q.safe(), "an unsafe clock is reported, not refused");
        assert_eq!(q.firmware_version(), 0x0102);
        assert_eq!(q.extra_data(), NONCE);
        assert_eq!(q.ak_name(), ak.public().name());
        assert_eq!(
            Some(q.qualified_signer().to_vec()),
            super::endorsement_primary_qn(&ak.public().name())
        );
        assert!(q.signed_in_endorsement_hierarchy(None));
        // Only the 5 selected PCRs (of 48 supplied) are exposed.
        assert_eq!(q.pcrs().iter().count(), 5);
        assert_eq!(q.pcrs().get(HashAlg::Sha1, 7), v.get(HashAlg::Sha1, 7));
        assert!(q.pcrs().get(HashAlg::Sha1, 0).is_none());
        assert_eq!(q.pcr_selection(), &pcrs().0);
        // Marshalling round trip of what the software TPM produced.
        assert_eq!(Attest::parse(&attest).unwrap().marshal(), attest);
        assert_eq!(Signature::parse(&sig.marshal()).unwrap(), sig);
    }
}

#[test]
fn flipped_signature_byte() {
    for ak in both() {
        let (attest, sig, v) = quote_with(&ak);
        let bad = match sig {
            Signature::Ecdsa { hash, r, mut s } => {
                s[5] ^= 1;
                Signature::Ecdsa { hash, r, s }
            }
            Signature::RsaSsa { hash, mut sig } => {
                sig[5] ^= 1;
                Signature::RsaSsa { hash, sig }
            }
            Signature::RsaPss { .. } => unreachable!(),
        };
        assert_eq!(
            verify_quote(ak.ak(), NONCE, &attest, &bad, &v),
            Err(VerifyError::SignatureInvalid)
        );
    }
}

#[test]
fn another_ak() {
    let a = SoftwareAk::generate_ecc_p256().unwrap();
    let b = SoftwareAk::generate_ecc_p256().unwrap();
    let (attest, sig, v) = quote_with(&a);
    assert_eq!(
        verify_quote(b.ak(), NONCE, &attest, &sig, &v),
        Err(VerifyError::SignatureInvalid)
    );
}

#[test]
fn scheme_not_allowed_for_ak() {
    let ecc = SoftwareAk::generate_ecc_p256().unwrap();
    let rsa = SoftwareAk::generate_rsa_2048().unwrap();
    let (attest, sig, v) = quote_with(&rsa);
    // An RSA signature presented for an ECC AK.
    assert_eq!(
        verify_quote(ecc.ak(), NONCE, &attest, &sig, &v),
        Err(VerifyError::SchemeMismatch {
            scheme: "RSASSA",
            hash: HashAlg::Sha256
        })
    );
    // Same signature bytes relabelled as PSS, and the right scheme with the wrong hash.
    let Signature::RsaSsa { sig: raw, .. } = sig else {
        unreachable!()
    };
    let pss = Signature::RsaPss {
        hash: HashAlg::Sha256,
        sig: raw.clone(),
    };
    assert_eq!(
        verify_quote(rsa.ak(), NONCE, &attest, &pss, &v),
        Err(VerifyError::SchemeMismatch {
            scheme: "RSAPSS",
            hash: HashAlg::Sha256
        })
    );
    let h384 = Signature::RsaSsa {
        hash: HashAlg::Sha384,
        sig: raw,
    };
    assert_eq!(
        verify_quote(rsa.ak(), NONCE, &attest, &h384, &v),
        Err(VerifyError::SchemeMismatch {
            scheme: "RSASSA",
            hash: HashAlg::Sha384
        })
    );
}

#[test]
fn extra_data_changed() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let (attest, _, v) = quote_with(&ak);
    let (forged, sig) = forge(&ak, &attest, |a| a.extra_data[0] ^= 1);
    assert_eq!(
        verify_quote(ak.ak(), NONCE, &forged, &sig, &v),
        Err(VerifyError::ExtraDataMismatch)
    );
    // A prefix of the nonce (truncation) is refused too.
    let (forged, sig) = forge(&ak, &attest, |a| a.extra_data.truncate(16));
    assert_eq!(
        verify_quote(ak.ak(), NONCE, &forged, &sig, &v),
        Err(VerifyError::ExtraDataMismatch)
    );
}

#[test]
fn one_pcr_changed_or_missing() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let (attest, sig, v) = quote_with(&ak);
    let mut changed = v.clone();
    changed.insert(15, HashAlg::Sha256.hash(b"evil"));
    assert_eq!(
        verify_quote(ak.ak(), NONCE, &attest, &sig, &changed),
        Err(VerifyError::PcrDigestMismatch)
    );
    let mut missing = PcrValues::new();
    for (i, d) in v.bank(HashAlg::Sha256) {
        missing.insert(i, *d);
    }
    assert_eq!(
        verify_quote(ak.ak(), NONCE, &attest, &sig, &missing),
        Err(VerifyError::MissingPcr {
            alg: HashAlg::Sha1,
            index: 7
        })
    );
    // A signed digest of the wrong length is a mismatch, not a panic.
    let (forged, sig) = forge(&ak, &attest, |a| {
        if let Attested::Quote(q) = &mut a.attested {
            q.pcr_digest.pop();
        }
    });
    assert_eq!(
        verify_quote(ak.ak(), NONCE, &forged, &sig, &v),
        Err(VerifyError::PcrDigestMismatch)
    );
}

#[test]
fn magic_and_type_changed() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let (attest, _, v) = quote_with(&ak);
    let (forged, sig) = forge(&ak, &attest, |a| a.magic = 0xff54_4348);
    assert_eq!(
        verify_quote(ak.ak(), NONCE, &forged, &sig, &v),
        Err(VerifyError::BadMagic { found: 0xff54_4348 })
    );
    let (forged, sig) = forge(&ak, &attest, |a| {
        a.attested = Attested::Certify {
            name: vec![0; 34],
            qualified_name: vec![1; 34],
        };
    });
    assert_eq!(
        verify_quote(ak.ak(), NONCE, &forged, &sig, &v),
        Err(VerifyError::NotAQuote { found: 0x8017 })
    );
}

#[test]
fn malformed_attest_names_field() {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let (attest, sig, v) = quote_with(&ak);
    let check = |bytes: &[u8]| verify_quote(ak.ak(), NONCE, bytes, &sig, &v);
    assert!(matches!(
        check(&attest[..attest.len() - 3]),
        Err(VerifyError::Parse(ParseError::Truncated {
            structure: "TPMS_ATTEST",
            field: "attested.quote.pcrDigest",
            ..
        }))
    ));
    let mut long = attest.clone();
    long.push(0);
    assert!(matches!(
        check(&long),
        Err(VerifyError::Parse(ParseError::TrailingData {
            structure: "TPMS_ATTEST",
            ..
        }))
    ));
    // extraData length claims 0x0100 bytes (> TPM2B_DATA's 66).
    let mut lie = attest.clone();
    let at = 6 + 2 + ak.public().name().len();
    lie[at..at + 2].copy_from_slice(&0x0100u16.to_be_bytes());
    assert!(matches!(
        check(&lie),
        Err(VerifyError::Parse(ParseError::TooLarge {
            field: "extraData",
            len: 256,
            max: 66,
            ..
        }))
    ));
    // Unknown PCR bank hash (SM3, 0x0012) in the selection.
    let a = Attest::parse(&attest).unwrap();
    let mut bytes = attest.clone();
    let sel_at = attest.len() - 2 - 32 - a_selection_len(&a);
    bytes[sel_at + 4..sel_at + 6].copy_from_slice(&0x0012u16.to_be_bytes());
    assert!(matches!(
        check(&bytes),
        Err(VerifyError::Parse(ParseError::UnknownAlgorithm {
            structure: "TPMS_PCR_SELECTION",
            field: "hash",
            alg: 0x12
        }))
    ));
    // clockInfo.safe must be a TPMI_YES_NO.
    let mut bytes = attest.clone();
    let safe_at = at + 2 + NONCE.len() + 16;
    assert_eq!(bytes[safe_at], 0);
    bytes[safe_at] = 2;
    assert!(matches!(
        check(&bytes),
        Err(VerifyError::Parse(ParseError::InvalidValue {
            field: "clockInfo.safe",
            value: 2,
            ..
        }))
    ));
}

fn a_selection_len(a: &Attest) -> usize {
    let Attested::Quote(q) = &a.attested else {
        unreachable!()
    };
    q.pcr_select.marshal().len()
}

fn ecc_public(attrs: ObjectAttributes, scheme: KeyScheme) -> Public {
    let ak = SoftwareAk::generate_ecc_p256().unwrap();
    let (x, y) = ak.public().ecc_point().unwrap();
    Public::new(
        HashAlg::Sha256,
        attrs,
        &[],
        PublicKey::Ecc {
            symmetric: SymDef::Null,
            scheme,
            curve: EccCurve::NistP256,
            kdf: KdfScheme::Null,
            x: x.to_vec(),
            y: y.to_vec(),
        },
    )
    .unwrap()
}

#[test]
fn ak_attributes_each_required() {
    let ok = ecc_public(ak_attributes(), KeyScheme::Ecdsa(HashAlg::Sha256));
    AkPublic::try_from(ok).unwrap();
    for (bit, name) in [
        (ObjectAttributes::SIGN, "sign"),
        (ObjectAttributes::RESTRICTED, "restricted"),
        (ObjectAttributes::FIXED_TPM, "fixedTPM"),
        (ObjectAttributes::FIXED_PARENT, "fixedParent"),
        (
            ObjectAttributes::SENSITIVE_DATA_ORIGIN,
            "sensitiveDataOrigin",
        ),
        (ObjectAttributes::USER_WITH_AUTH, "userWithAuth"),
    ] {
        let p = ecc_public(
            ak_attributes().without(bit),
            KeyScheme::Ecdsa(HashAlg::Sha256),
        );
        assert_eq!(
            AkPublic::try_from(p).unwrap_err(),
            AkError::MissingAttribute(name)
        );
    }
    let p = ecc_public(
        ak_attributes().with(ObjectAttributes::DECRYPT),
        KeyScheme::Ecdsa(HashAlg::Sha256),
    );
    assert_eq!(
        AkPublic::try_from(p).unwrap_err(),
        AkError::ForbiddenAttribute("decrypt")
    );
}

#[test]
fn ak_key_and_scheme_checks() {
    let p = ecc_public(ak_attributes(), KeyScheme::Ecdsa(HashAlg::Sha384));
    assert!(matches!(
        AkPublic::try_from(p),
        Err(AkError::UnsupportedScheme(_))
    ));
    let p = ecc_public(ak_attributes(), KeyScheme::Ecdh(HashAlg::Sha256));
    assert!(matches!(
        AkPublic::try_from(p),
        Err(AkError::UnsupportedScheme(_))
    ));
    // Off-curve point.
    let p = Public::new(
        HashAlg::Sha256,
        ak_attributes(),
        &[],
        PublicKey::Ecc {
            symmetric: SymDef::Null,
            scheme: KeyScheme::Ecdsa(HashAlg::Sha256),
            curve: EccCurve::NistP256,
            kdf: KdfScheme::Null,
            x: vec![1; 32],
            y: vec![2; 32],
        },
    )
    .unwrap();
    assert!(matches!(AkPublic::try_from(p), Err(AkError::InvalidKey(_))));
    // RSA-1024 and a SHA-1 name.
    let rsa = SoftwareAk::generate_rsa_2048().unwrap();
    let n = rsa.public().rsa_modulus().unwrap();
    let mk = |name_alg, bits: u16, modulus: &[u8]| {
        Public::new(
            name_alg,
            ak_attributes(),
            &[],
            PublicKey::Rsa {
                symmetric: SymDef::Null,
                scheme: KeyScheme::RsaSsa(HashAlg::Sha256),
                key_bits: bits,
                exponent: 0,
                modulus: modulus.to_vec(),
            },
        )
        .unwrap()
    };
    AkPublic::try_from(mk(HashAlg::Sha256, 2048, n)).unwrap();
    assert_eq!(
        AkPublic::try_from(mk(HashAlg::Sha256, 1024, &n[..128])).unwrap_err(),
        AkError::UnsupportedKey("RSA size")
    );
    assert_eq!(
        AkPublic::try_from(mk(HashAlg::Sha1, 2048, n)).unwrap_err(),
        AkError::WeakNameAlg(HashAlg::Sha1)
    );
}

#[test]
fn null_scheme_ak_accepts_curve_hash_only() {
    // An AK created with a NULL scheme: the quote's signature picks the scheme.
    let sw = SoftwareAk::generate_ecc_p256().unwrap();
    let null_ak = AkPublic::try_from(ecc_public(ak_attributes(), KeyScheme::Null)).unwrap();
    let (attest, sig, v) = quote_with(&sw);
    // Different key, so the signature is invalid; but the scheme (ECDSA-SHA256) is allowed.
    assert_eq!(
        verify_quote(&null_ak, NONCE, &attest, &sig, &v),
        Err(VerifyError::SignatureInvalid)
    );
    let Signature::Ecdsa { r, s, .. } = sig else {
        unreachable!()
    };
    let sig384 = Signature::Ecdsa {
        hash: HashAlg::Sha384,
        r,
        s,
    };
    assert_eq!(
        verify_quote(&null_ak, NONCE, &attest, &sig384, &v),
        Err(VerifyError::SchemeMismatch {
            scheme: "ECDSA",
            hash: HashAlg::Sha384
        })
    );
}

#[test]
fn pcr_digest_uses_signature_hash_and_selection_order() {
    let (sel, v) = pcrs();
    let mut parts = Vec::new();
    parts.extend_from_slice(v.get(HashAlg::Sha1, 7).unwrap().as_bytes());
    for i in [0u8, 4, 7, 15] {
        parts.extend_from_slice(v.get(HashAlg::Sha256, i).unwrap().as_bytes());
    }
    assert_eq!(
        sel.digest(HashAlg::Sha256, &v).unwrap(),
        HashAlg::Sha256.hash(&parts)
    );
    assert_eq!(
        sel.digest(HashAlg::Sha384, &v).unwrap(),
        HashAlg::Sha384.hash(&parts)
    );
}
