//! Known answers computed with an independent implementation (Python `cryptography` and
//! `hashlib`), plus round trips through the EK's private key.

use super::kdf::{kdfa, kdfe};
use super::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn ak_name() -> Vec<u8> {
    let mut n = vec![0x00, 0x0b];
    n.extend_from_slice(HashAlg::Sha256.hash(b"ak").as_bytes());
    n
}

#[test]
fn kdfa_known_answers() {
    let key: Vec<u8> = (0..32).collect();
    let mut ctx = vec![0x00, 0x0b];
    ctx.extend_from_slice(&[0; 32]);
    let out = kdfa(HashAlg::Sha256, &key, b"STORAGE", &ctx, &[], 128).unwrap();
    assert_eq!(*out, h("4535165c7f0dc2bd1abef241c5893af0"));
    let out = kdfa(HashAlg::Sha256, &key, b"INTEGRITY", &[], &[], 256).unwrap();
    assert_eq!(
        *out,
        h("bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e")
    );
    // Several HMAC blocks, SHA-1.
    let out = kdfa(HashAlg::Sha1, b"key", b"XYZ", b"u", b"v", 512).unwrap();
    assert_eq!(*out, h("1e1b0a040798e4e13cb2f20687a6a2320047cab3be7135fe2c36d6d1081671c75ff7adc3a7adb6ea93d08a42544ff5a6e0ce1b139a3e279c888e7e11bfd6282d"));
}

#[test]
fn kdfe_known_answers() {
    let out = kdfe(
        HashAlg::Sha256,
        &[7; 32],
        b"IDENTITY",
        &[1; 32],
        &[2; 32],
        256,
    )
    .unwrap();
    assert_eq!(
        *out,
        h("4b91fa923cc2e699a33b2d6d53f2991387c50a5654f1c8807116309b42b063de")
    );
    let out = kdfe(
        HashAlg::Sha384,
        &[7; 48],
        b"IDENTITY",
        &[1; 48],
        &[2; 48],
        384,
    )
    .unwrap();
    assert_eq!(*out, h("320ab0fc497060cd5e8f5b74ca4867978b8bfb9c5a1c2903e99a31084b85321b25505db8857dc73517a7bb1fa6787820"));
}

#[test]
fn kdf_refuses_odd_or_oversized_output() {
    for bits in [0, 7, 129, 520] {
        assert!(matches!(
            kdfa(HashAlg::Sha256, b"k", b"L", &[], &[], bits),
            Err(MakeCredentialError::KdfOutputSize { .. })
        ));
        assert!(matches!(
            kdfe(HashAlg::Sha256, b"z", b"L", &[], &[], bits),
            Err(MakeCredentialError::KdfOutputSize { .. })
        ));
    }
}

const ECC_EK_X: &str = "471c3e758c4904285bba7e53118ed0f524adeb0757d25bd2f8e7b0d76dfa714c";
const ECC_EK_Y: &str = "dd520f7aca8a8b917acc37f51de8f0c9bbe3ad858382e702dc25a12d09f7a858";

#[test]
fn ecc_make_credential_known_answer() {
    let (x, y) = (h(ECC_EK_X), h(ECC_EK_Y));
    let ek = EkInputs {
        name_alg: HashAlg::Sha256,
        aes_bits: 128,
        key: EkKey::Ecc {
            curve: EccCurve::NistP256,
            x: &x,
            y: &y,
        },
    };
    let eph = h("000fedcba987654321fedcba987654321fedcba987654321fedcba987654321f");
    let made = make_credential_inputs(
        &ek,
        &ak_name(),
        b"0123456789abcdef0123456789abcdef",
        Entropy::Fixed(&eph),
    )
    .unwrap();
    assert_eq!(made.credential_blob, h("004400204309577115261bcbf4df0787b6eeb3630de0680222eaff7a05d27811b9a1b56c2974948fbfb637758190eafd35a147ba413c68b55c689b484e79ef53faf914fa3f58"));
    assert_eq!(made.encrypted_secret, h("004400209670835f2c93659928c275a6f8ff9d007244f9ed3e5583843206b8fa37618e4f0020e14b8b79e519361a7d12b071f8cd01de76e46e22c505dc722a8ecb09c88b0845"));
}

#[test]
fn ecc_point_off_curve_is_refused() {
    let (x, mut y) = (h(ECC_EK_X), h(ECC_EK_Y));
    y[31] ^= 1;
    let ek = EkInputs {
        name_alg: HashAlg::Sha256,
        aes_bits: 128,
        key: EkKey::Ecc {
            curve: EccCurve::NistP256,
            x: &x,
            y: &y,
        },
    };
    let err = make_credential_inputs(&ek, &ak_name(), b"s", Entropy::System).unwrap_err();
    assert!(matches!(err, MakeCredentialError::InvalidEkKey(_)), "{err}");
}

#[test]
fn rsa_make_credential_known_answer_and_oaep_label() {
    let modulus = include_bytes!("testdata/rsa2048-test-ek.modulus");
    let ek = EkInputs {
        name_alg: HashAlg::Sha256,
        aes_bits: 128,
        key: EkKey::Rsa {
            modulus,
            exponent: 0,
        },
    };
    let seed: Vec<u8> = (100..132).collect();
    let made = make_credential_inputs(&ek, &ak_name(), b"secret!", Entropy::Fixed(&seed)).unwrap();
    assert_eq!(made.credential_blob, h("002b0020c64a6c63d6c4889ba259c2fd5ab1c6b548f6ef5c85f11ff74cfd01d6d28198047912f90e3491a8ca43"));

    // The EK's private key recovers the seed only with the "IDENTITY\0" label.
    let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(include_bytes!(
        "testdata/rsa2048-test-ek.pk8"
    ))
    .unwrap();
    let private = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(private).unwrap();
    let (len, ct) = made.encrypted_secret.split_at(2);
    assert_eq!(usize::from(u16::from_be_bytes([len[0], len[1]])), ct.len());
    assert_eq!(ct.len(), 256);
    let mut out = vec![0u8; 256];
    let alg = &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256;
    let pt = private
        .decrypt(alg, ct, &mut out, Some(b"IDENTITY\0"))
        .unwrap();
    assert_eq!(pt, &seed[..]);
    let mut out = vec![0u8; 256];
    assert!(private
        .decrypt(alg, ct, &mut out, Some(b"DUPLICATE\0"))
        .is_err());
}

#[test]
fn rsa_random_seed_differs_each_time() {
    let modulus = include_bytes!("testdata/rsa2048-test-ek.modulus");
    let ek = EkInputs {
        name_alg: HashAlg::Sha256,
        aes_bits: 128,
        key: EkKey::Rsa {
            modulus,
            exponent: 65537,
        },
    };
    let a = make_credential_inputs(&ek, &ak_name(), b"s", Entropy::System).unwrap();
    let b = make_credential_inputs(&ek, &ak_name(), b"s", Entropy::System).unwrap();
    assert_ne!(a.credential_blob, b.credential_blob);
    assert_ne!(a.encrypted_secret, b.encrypted_secret);
}

#[test]
fn bad_inputs_are_refused() {
    let modulus = include_bytes!("testdata/rsa2048-test-ek.modulus");
    let ek = EkInputs {
        name_alg: HashAlg::Sha256,
        aes_bits: 128,
        key: EkKey::Rsa {
            modulus,
            exponent: 0,
        },
    };
    // Credential too long for the nameAlg digest, and empty.
    assert!(matches!(
        make_credential_inputs(&ek, &ak_name(), &[1; 33], Entropy::System),
        Err(MakeCredentialError::CredentialSize { len: 33, max: 32 })
    ));
    assert!(matches!(
        make_credential_inputs(&ek, &ak_name(), &[], Entropy::System),
        Err(MakeCredentialError::CredentialSize { len: 0, .. })
    ));
    // AK names: unknown alg, wrong digest length, empty.
    let mut bad = ak_name();
    bad[1] = 0x99;
    assert!(matches!(
        make_credential_inputs(&ek, &bad, b"s", Entropy::System),
        Err(MakeCredentialError::Parse(_))
    ));
    let mut short = ak_name();
    short.pop();
    assert!(matches!(
        make_credential_inputs(&ek, &short, b"s", Entropy::System),
        Err(MakeCredentialError::InvalidAkName(_))
    ));
    assert!(make_credential_inputs(&ek, &[], b"s", Entropy::System).is_err());
    // Small RSA modulus.
    let small = EkInputs {
        key: EkKey::Rsa {
            modulus: &modulus[..128],
            exponent: 0,
        },
        ..ek
    };
    assert!(matches!(
        make_credential_inputs(&small, &ak_name(), b"s", Entropy::System),
        Err(MakeCredentialError::RsaKeySize { bits: 1024 })
    ));
}
