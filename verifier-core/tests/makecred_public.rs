//! MakeCredential through the public API on `Public` EK areas: known answer for an ECC EK
//! and refusal of EKs the TPM could not activate with.

// Test code: a failed unwrap or index is a failed test, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use verifier_core::makecred::{
    make_credential, make_credential_with, Entropy, MakeCredentialError,
};
use verifier_core::wire::{
    EccCurve, HashAlg, KdfScheme, KeyScheme, ObjectAttributes, Public, PublicKey, SymDef, SymMode,
};

const MODULUS: &[u8] = include_bytes!("../src/makecred/testdata/rsa2048-test-ek.modulus");

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn ek_attrs() -> ObjectAttributes {
    ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::ADMIN_WITH_POLICY
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::DECRYPT
}

const AES128_CFB: SymDef = SymDef::Aes {
    key_bits: 128,
    mode: SymMode::Cfb,
};

fn ecc_ek(attrs: ObjectAttributes, symmetric: SymDef) -> Public {
    Public::new(
        HashAlg::Sha256,
        attrs,
        &[],
        PublicKey::Ecc {
            symmetric,
            scheme: KeyScheme::Null,
            curve: EccCurve::NistP256,
            kdf: KdfScheme::Null,
            x: h("471c3e758c4904285bba7e53118ed0f524adeb0757d25bd2f8e7b0d76dfa714c"),
            y: h("dd520f7aca8a8b917acc37f51de8f0c9bbe3ad858382e702dc25a12d09f7a858"),
        },
    )
    .unwrap()
}

fn rsa_ek(attrs: ObjectAttributes, symmetric: SymDef) -> Public {
    Public::new(
        HashAlg::Sha256,
        attrs,
        &[],
        PublicKey::Rsa {
            symmetric,
            scheme: KeyScheme::Null,
            key_bits: 2048,
            exponent: 0,
            modulus: MODULUS.to_vec(),
        },
    )
    .unwrap()
}

fn ak_name() -> Vec<u8> {
    let mut n = vec![0x00, 0x0b];
    n.extend_from_slice(HashAlg::Sha256.hash(b"ak").as_bytes());
    n
}

#[test]
fn ecc_known_answer_through_public() {
    // Same vector as the unit test, computed independently (Python `cryptography`).
    let eph = h("000fedcba987654321fedcba987654321fedcba987654321fedcba987654321f");
    let made = make_credential_with(
        &ecc_ek(ek_attrs(), AES128_CFB),
        &ak_name(),
        b"0123456789abcdef0123456789abcdef",
        Entropy::Fixed(&eph),
    )
    .unwrap();
    assert_eq!(made.credential_blob, h("004400204309577115261bcbf4df0787b6eeb3630de0680222eaff7a05d27811b9a1b56c2974948fbfb637758190eafd35a147ba413c68b55c689b484e79ef53faf914fa3f58"));
    assert_eq!(made.encrypted_secret, h("004400209670835f2c93659928c275a6f8ff9d007244f9ed3e5583843206b8fa37618e4f0020e14b8b79e519361a7d12b071f8cd01de76e46e22c505dc722a8ecb09c88b0845"));
}

#[test]
fn rsa_ek_output_shapes() {
    let made = make_credential(&rsa_ek(ek_attrs(), AES128_CFB), &ak_name(), b"s3cret").unwrap();
    // TPM2B_ENCRYPTED_SECRET: size 256 then the OAEP ciphertext.
    assert_eq!(made.encrypted_secret.len(), 2 + 256);
    assert_eq!(&made.encrypted_secret[..2], &[0x01, 0x00]);
    // TPM2B_ID_OBJECT: size, TPM2B_DIGEST(HMAC-SHA256), then encIdentity (2 + 6 bytes).
    assert_eq!(made.credential_blob.len(), 2 + 2 + 32 + 8);
    assert_eq!(&made.credential_blob[..4], &[0x00, 42, 0x00, 32]);
}

#[test]
fn signing_key_is_not_an_ek() {
    let attrs = ek_attrs()
        .without(ObjectAttributes::DECRYPT)
        .with(ObjectAttributes::SIGN);
    let err = make_credential(&ecc_ek(attrs, SymDef::Null), &ak_name(), b"s").unwrap_err();
    assert!(
        matches!(err, MakeCredentialError::NotStorageKey { .. }),
        "{err}"
    );
}

#[test]
fn unrestricted_decrypt_key_is_refused() {
    let attrs = ek_attrs().without(ObjectAttributes::RESTRICTED);
    let err = make_credential(&rsa_ek(attrs, AES128_CFB), &ak_name(), b"s").unwrap_err();
    assert!(
        matches!(err, MakeCredentialError::NotStorageKey { .. }),
        "{err}"
    );
}

#[test]
fn ek_without_cfb_symmetric_is_refused() {
    let err = make_credential(&rsa_ek(ek_attrs(), SymDef::Null), &ak_name(), b"s");
    // A restricted decrypt key without a symmetric def is refused by the parser or by us.
    if let Err(e) = err {
        let ok = matches!(e, MakeCredentialError::UnsupportedSymmetric { .. });
        assert!(ok, "{e}");
    } else {
        panic!("EK without a symmetric definition was accepted");
    }
    let ctr = SymDef::Aes {
        key_bits: 128,
        mode: SymMode::Ctr,
    };
    let err = make_credential(&ecc_ek(ek_attrs(), ctr), &ak_name(), b"s").unwrap_err();
    assert!(
        matches!(
            err,
            MakeCredentialError::UnsupportedSymmetric { mode: 0x0040, .. }
        ),
        "{err}"
    );
}

#[test]
fn credential_longer_than_name_digest_is_refused() {
    let err = make_credential(&ecc_ek(ek_attrs(), AES128_CFB), &ak_name(), &[0; 33]).unwrap_err();
    assert!(
        matches!(
            err,
            MakeCredentialError::CredentialSize { len: 33, max: 32 }
        ),
        "{err}"
    );
}
