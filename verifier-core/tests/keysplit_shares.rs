//! K_b split, payload encryption and shares at rest: round trips, bounds, and each forged or
//! misused input refused.
// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use verifier_core::keysplit::{
    combine, decrypt_payload, encrypt_payload, enroll_material, split, wrap_context, BootKey,
    KeySplitError, MasterKey, PayloadCiphertext, Share, MAX_PAYLOAD_CIPHERTEXT_LEN,
    MAX_PAYLOAD_LEN, WRAPPED_SHARE_LEN,
};
use verifier_core::ParseError;

const AGENT: &str = "3f2a9c0d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877";
const OTHER_AGENT: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const LUKS_KEY: &[u8] = b"correct horse battery staple, 64 bytes of LUKS key material....";

fn zero_share() -> Share {
    Share::from_bytes([0u8; 32])
}

/// A share used as if it were K_b: `combine(s, 0) = s`.
fn as_boot_key(share: &Share) -> BootKey {
    combine(share, &zero_share())
}

#[test]
fn combine_inverts_split() {
    let k = BootKey::generate().unwrap();
    let (u, v) = split(&k).unwrap();
    assert_eq!(combine(&u, &v), k);
    assert_eq!(combine(&v, &u), k);
    assert_ne!(u, v);
    // U is drawn fresh each time: splitting the same K_b twice gives unrelated shares.
    let (u2, v2) = split(&k).unwrap();
    assert_ne!(u, u2);
    assert_ne!(v, v2);
    assert_eq!(combine(&u2, &v2), k);
    // Mixing shares of two splits does not give K_b.
    assert_ne!(combine(&u, &v2), k);
}

#[test]
fn one_share_alone_does_not_decrypt() {
    let m = enroll_material(AGENT, LUKS_KEY).unwrap();
    for (name, share) in [("U", &m.u), ("V", &m.v)] {
        assert_eq!(
            decrypt_payload(&as_boot_key(share), AGENT, &m.payload_ct).unwrap_err(),
            KeySplitError::PayloadDecrypt,
            "{name} used as K_b"
        );
    }
    let both = combine(&m.u, &m.v);
    assert_eq!(
        decrypt_payload(&both, AGENT, &m.payload_ct)
            .unwrap()
            .as_slice(),
        LUKS_KEY
    );
}

#[test]
fn shares_of_another_enrollment_do_not_decrypt() {
    let a = enroll_material(AGENT, LUKS_KEY).unwrap();
    let b = enroll_material(AGENT, LUKS_KEY).unwrap();
    assert_eq!(
        decrypt_payload(&combine(&a.u, &b.v), AGENT, &a.payload_ct).unwrap_err(),
        KeySplitError::PayloadDecrypt
    );
}

#[test]
fn payload_round_trip_sizes() {
    let k = BootKey::generate().unwrap();
    for len in [0, 1, 32, 512, MAX_PAYLOAD_LEN] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let ct = encrypt_payload(&k, AGENT, &payload).unwrap();
        assert_eq!(ct.as_bytes().len(), len + 29, "version + nonce + tag");
        let parsed = PayloadCiphertext::from_bytes(ct.as_bytes()).unwrap();
        assert_eq!(parsed, ct);
        assert_eq!(
            decrypt_payload(&k, AGENT, &parsed).unwrap().as_slice(),
            payload.as_slice()
        );
    }
    assert_eq!(MAX_PAYLOAD_CIPHERTEXT_LEN, MAX_PAYLOAD_LEN + 29);
}

#[test]
fn oversize_payload_refused() {
    let k = BootKey::generate().unwrap();
    let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
    let expected = KeySplitError::PayloadTooLarge {
        len: MAX_PAYLOAD_LEN + 1,
        max: MAX_PAYLOAD_LEN,
    };
    assert_eq!(encrypt_payload(&k, AGENT, &big).unwrap_err(), expected);
    assert_eq!(enroll_material(AGENT, &big).unwrap_err(), expected);
    // A ciphertext claiming a larger payload is refused on parse, before decryption.
    let mut forged = vec![1u8];
    forged.extend_from_slice(&[0u8; 12]);
    forged.extend_from_slice(&vec![0u8; MAX_PAYLOAD_LEN + 17]);
    assert!(matches!(
        PayloadCiphertext::from_bytes(&forged),
        Err(KeySplitError::Malformed(ParseError::TooLarge { .. }))
    ));
}

#[test]
fn payload_bound_to_agent_id() {
    let k = BootKey::generate().unwrap();
    let ct = encrypt_payload(&k, AGENT, LUKS_KEY).unwrap();
    assert_eq!(
        decrypt_payload(&k, OTHER_AGENT, &ct).unwrap_err(),
        KeySplitError::PayloadDecrypt
    );
    assert_eq!(
        decrypt_payload(&k, "", &ct).unwrap_err(),
        KeySplitError::PayloadDecrypt
    );
}

#[test]
fn payload_wrong_key_refused() {
    let k = BootKey::generate().unwrap();
    let other = BootKey::generate().unwrap();
    let ct = encrypt_payload(&k, AGENT, LUKS_KEY).unwrap();
    assert_eq!(
        decrypt_payload(&other, AGENT, &ct).unwrap_err(),
        KeySplitError::PayloadDecrypt
    );
}

#[test]
fn tampered_payload_ciphertext_refused() {
    let k = BootKey::generate().unwrap();
    let ct = encrypt_payload(&k, AGENT, LUKS_KEY).unwrap();
    let bytes = ct.as_bytes().to_vec();
    // Nonce, first ciphertext byte, last ciphertext byte, last tag byte.
    for pos in [1, 12, 13, bytes.len() - 17, bytes.len() - 1] {
        let mut forged = bytes.clone();
        forged[pos] ^= 0x80;
        let parsed = PayloadCiphertext::from_bytes(&forged).unwrap();
        assert_eq!(
            decrypt_payload(&k, AGENT, &parsed).unwrap_err(),
            KeySplitError::PayloadDecrypt,
            "byte {pos}"
        );
    }
    let mut forged = bytes.clone();
    forged[0] = 2;
    assert_eq!(
        PayloadCiphertext::from_bytes(&forged).unwrap_err(),
        KeySplitError::UnsupportedVersion {
            structure: "PayloadCiphertext",
            version: 2
        }
    );
    // Truncations: inside the nonce, and leaving less than a tag.
    for len in [0, 5, 13, 28] {
        assert!(
            matches!(
                PayloadCiphertext::from_bytes(&bytes[..len]),
                Err(KeySplitError::Malformed(ParseError::Truncated { .. }))
            ),
            "length {len}"
        );
    }
    // Dropping one byte keeps a parsable shape but no longer authenticates.
    let short = PayloadCiphertext::from_bytes(&bytes[..bytes.len() - 1]).unwrap();
    assert_eq!(
        decrypt_payload(&k, AGENT, &short).unwrap_err(),
        KeySplitError::PayloadDecrypt
    );
}

#[test]
fn wrap_round_trip_and_length() {
    let master = MasterKey::generate().unwrap();
    let (u, v) = split(&BootKey::generate().unwrap()).unwrap();
    let ctx = wrap_context("verifier", AGENT);
    assert_eq!(ctx, format!("verifier|{AGENT}").into_bytes());
    let wrapped = master.wrap_share(&v, &ctx).unwrap();
    assert_eq!(wrapped.len(), WRAPPED_SHARE_LEN);
    assert_eq!(master.unwrap_share(&wrapped, &ctx).unwrap(), v);
    assert_ne!(master.unwrap_share(&wrapped, &ctx).unwrap(), u);
    // Fresh nonce per wrap.
    assert_ne!(master.wrap_share(&v, &ctx).unwrap(), wrapped);
    // A master key reloaded from its bytes unwraps the same row.
    let reloaded = MasterKey::from_slice(master.expose_secret()).unwrap();
    assert_eq!(reloaded.unwrap_share(&wrapped, &ctx).unwrap(), v);
}

#[test]
fn unwrap_with_wrong_master_key_refused() {
    let master = MasterKey::generate().unwrap();
    let other = MasterKey::generate().unwrap();
    let share = Share::from_bytes([7u8; 32]);
    let ctx = wrap_context("tenant", AGENT);
    let wrapped = master.wrap_share(&share, &ctx).unwrap();
    assert_eq!(
        other.unwrap_share(&wrapped, &ctx).unwrap_err(),
        KeySplitError::Unwrap
    );
}

#[test]
fn row_copied_to_other_agent_or_role_refused() {
    let master = MasterKey::generate().unwrap();
    let share = Share::from_bytes([9u8; 32]);
    let wrapped = master
        .wrap_share(&share, &wrap_context("verifier", AGENT))
        .unwrap();
    for ctx in [
        wrap_context("verifier", OTHER_AGENT),
        wrap_context("tenant", AGENT),
        Vec::new(),
    ] {
        assert_eq!(
            master.unwrap_share(&wrapped, &ctx).unwrap_err(),
            KeySplitError::Unwrap,
            "{}",
            String::from_utf8_lossy(&ctx)
        );
    }
}

#[test]
fn tampered_wrapped_share_refused() {
    let master = MasterKey::generate().unwrap();
    let ctx = wrap_context("verifier", AGENT);
    let wrapped = master
        .wrap_share(&Share::from_bytes([1u8; 32]), &ctx)
        .unwrap();
    for pos in [1, 13, 44, WRAPPED_SHARE_LEN - 1] {
        let mut forged = wrapped.clone();
        forged[pos] ^= 1;
        assert_eq!(
            master.unwrap_share(&forged, &ctx).unwrap_err(),
            KeySplitError::Unwrap,
            "byte {pos}"
        );
    }
    let mut forged = wrapped.clone();
    forged[0] = 0;
    assert!(matches!(
        master.unwrap_share(&forged, &ctx),
        Err(KeySplitError::UnsupportedVersion { version: 0, .. })
    ));
    // A row longer than a share is refused by its bound before decryption.
    let mut long = wrapped.clone();
    long.push(0);
    assert!(matches!(
        master.unwrap_share(&long, &ctx),
        Err(KeySplitError::Malformed(ParseError::TooLarge { .. }))
    ));
}

#[test]
fn key_material_lengths_checked() {
    assert_eq!(
        Share::from_slice(&[0u8; 31]).unwrap_err(),
        KeySplitError::ShareLength {
            len: 31,
            expected: 32
        }
    );
    assert!(Share::from_slice(&[0u8; 33]).is_err());
    assert!(MasterKey::from_slice(&[0u8; 16]).is_err());
    let s = Share::from_slice(&[5u8; 32]).unwrap();
    assert_eq!(s.expose_secret(), &[5u8; 32]);
}

#[test]
fn debug_output_redacts_secrets() {
    let share = Share::from_bytes([0xab; 32]);
    let master = MasterKey::from_bytes([0xcd; 32]);
    let k = combine(&share, &Share::from_bytes([0x11; 32])); // 0xba repeated
    let m = enroll_material(AGENT, LUKS_KEY).unwrap();
    let shown = format!("{share:?} {master:?} {k:?} {m:?}");
    for needle in [
        "ab, ",
        "171",
        "abab",
        "cdcd",
        "205",
        "baba",
        "186",
        "correct horse",
    ] {
        assert!(!shown.contains(needle), "{needle} in {shown}");
    }
    assert!(shown.contains("<redacted>"));
    let u_hex = hex::encode(m.u.expose_secret());
    assert!(!shown.contains(&u_hex[..8]));
}
