//! Sealing shares to the agent's ephemeral key NK (HPKE base mode): round trips, the whole
//! release flow, and each swapped or changed input refused. The RFC 9180 known-answer tests
//! sit next to the implementation (`keysplit::hpke::tests`), which can fix the ephemeral key.
// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use verifier_core::keysplit::{
    combine, decrypt_payload, enroll_material, seal, seal_share, share_info, wrap_context,
    KeySplitError, MasterKey, NkPrivate, NkPublic, Sealed, Share, MAX_SEALED_PLAINTEXT,
};
use verifier_core::merkle::{quote_extra_data, MerkleTree};
use verifier_core::ParseError;

const AGENT: &str = "3f2a9c0d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877";
const INFO: &[u8] = b"unlock/v1 share verifier";
const AAD: &[u8] = b"challenge-0001";

#[test]
fn seal_open_round_trip_sizes() {
    let nk = NkPrivate::generate().unwrap();
    for len in [0, 1, 32, 1000, MAX_SEALED_PLAINTEXT] {
        let pt: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let sealed = seal(&nk.public(), INFO, AAD, &pt).unwrap();
        assert_eq!(sealed.ciphertext.len(), len + 16);
        assert_eq!(
            nk.open(&sealed, INFO, AAD).unwrap().as_slice(),
            pt.as_slice()
        );
    }
}

#[test]
fn each_seal_uses_a_fresh_ephemeral_key() {
    let nk = NkPrivate::generate().unwrap();
    let a = seal(&nk.public(), INFO, AAD, b"same").unwrap();
    let b = seal(&nk.public(), INFO, AAD, b"same").unwrap();
    assert_ne!(a.enc, b.enc);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn oversize_plaintext_refused() {
    let nk = NkPrivate::generate().unwrap();
    let big = vec![0u8; MAX_SEALED_PLAINTEXT + 1];
    assert!(matches!(
        seal(&nk.public(), INFO, AAD, &big),
        Err(KeySplitError::SealedLength { .. })
    ));
    let forged = Sealed {
        enc: nk.public().as_bytes().to_owned(),
        ciphertext: vec![0u8; MAX_SEALED_PLAINTEXT + 17],
    };
    assert!(matches!(
        nk.open(&forged, INFO, AAD),
        Err(KeySplitError::SealedLength { .. })
    ));
}

#[test]
fn other_nk_cannot_open() {
    let nk = NkPrivate::generate().unwrap();
    let other = NkPrivate::generate().unwrap();
    assert_ne!(nk.public(), other.public());
    let sealed = seal(&nk.public(), INFO, AAD, b"secret").unwrap();
    assert_eq!(
        other.open(&sealed, INFO, AAD).unwrap_err(),
        KeySplitError::Open
    );
}

#[test]
fn changed_info_or_aad_refused() {
    let nk = NkPrivate::generate().unwrap();
    let sealed = seal(&nk.public(), INFO, AAD, b"secret").unwrap();
    for (info, aad) in [
        (&b"unlock/v1 share tenant"[..], AAD),
        (&b""[..], AAD),
        (INFO, &b"challenge-0002"[..]),
        (INFO, &b""[..]),
    ] {
        assert_eq!(
            nk.open(&sealed, info, aad).unwrap_err(),
            KeySplitError::Open,
            "info {:?} aad {:?}",
            String::from_utf8_lossy(info),
            String::from_utf8_lossy(aad)
        );
    }
}

#[test]
fn changed_enc_or_ciphertext_refused() {
    let nk = NkPrivate::generate().unwrap();
    let sealed = seal(&nk.public(), INFO, AAD, &[0x5a; 32]).unwrap();
    for pos in [0, 17, 31] {
        let mut forged = sealed.clone();
        forged.enc[pos] ^= 0x01;
        let err = nk.open(&forged, INFO, AAD).unwrap_err();
        assert!(
            matches!(err, KeySplitError::Open | KeySplitError::InvalidPublicKey),
            "enc byte {pos}: {err:?}"
        );
    }
    for pos in [0, 31, 32, 47] {
        let mut forged = sealed.clone();
        forged.ciphertext[pos] ^= 0x01;
        assert_eq!(
            nk.open(&forged, INFO, AAD).unwrap_err(),
            KeySplitError::Open,
            "ciphertext byte {pos}"
        );
    }
    let mut forged = sealed.clone();
    forged.ciphertext.truncate(15);
    assert!(matches!(
        nk.open(&forged, INFO, AAD),
        Err(KeySplitError::SealedLength { len: 15, .. })
    ));
}

/// A low-order `enc` (here the all-zero point) would make the shared secret all zeros and
/// known to anyone; it is refused rather than used (RFC 9180 section 7.1.4).
#[test]
fn low_order_points_refused() {
    let nk = NkPrivate::generate().unwrap();
    let mut sealed = seal(&nk.public(), INFO, AAD, b"x").unwrap();
    sealed.enc = [0u8; 32];
    assert_eq!(
        nk.open(&sealed, INFO, AAD).unwrap_err(),
        KeySplitError::InvalidPublicKey
    );
    let mut one = [0u8; 32];
    one[0] = 1;
    for bad in [[0u8; 32], one] {
        assert_eq!(
            seal(&NkPublic::from_bytes(bad), INFO, AAD, b"x").unwrap_err(),
            KeySplitError::InvalidPublicKey
        );
    }
}

#[test]
fn sealed_bytes_round_trip_and_bounds() {
    let nk = NkPrivate::generate().unwrap();
    let sealed = seal(&nk.public(), INFO, AAD, b"share").unwrap();
    let bytes = sealed.to_bytes();
    assert_eq!(bytes.len(), 32 + 5 + 16);
    let back = Sealed::from_bytes(&bytes).unwrap();
    assert_eq!(back, sealed);
    assert_eq!(nk.open(&back, INFO, AAD).unwrap().as_slice(), b"share");
    assert!(matches!(
        Sealed::from_bytes(&bytes[..31]),
        Err(KeySplitError::Malformed(ParseError::Truncated { .. }))
    ));
    assert!(matches!(
        Sealed::from_bytes(&bytes[..32 + 15]),
        Err(KeySplitError::SealedLength { len: 15, .. })
    ));
    let huge = vec![0u8; 32 + MAX_SEALED_PLAINTEXT + 17];
    assert!(matches!(
        Sealed::from_bytes(&huge),
        Err(KeySplitError::Malformed(ParseError::TooLarge { .. }))
    ));
}

#[test]
fn nk_public_key_length_checked() {
    let nk = NkPrivate::generate().unwrap();
    let public = NkPublic::from_slice(nk.public().as_bytes()).unwrap();
    assert_eq!(public, nk.public());
    assert_eq!(
        NkPublic::from_slice(&[1u8; 33]).unwrap_err(),
        KeySplitError::PublicKeyLength {
            len: 33,
            expected: 32
        }
    );
    assert!(NkPublic::from_slice(&[]).is_err());
}

#[test]
fn share_sealing_is_bound_to_role_and_challenge() {
    assert_eq!(share_info("tenant"), b"unlock/v1 sharetenant".to_vec());
    let nk = NkPrivate::generate().unwrap();
    let share = Share::from_bytes([0x42; 32]);
    let sealed = seal_share(&nk.public(), "verifier", b"chal-1", &share).unwrap();
    assert_eq!(
        nk.open_share(&sealed, "verifier", b"chal-1").unwrap(),
        share
    );
    // The tenant's slot cannot be filled with the verifier's answer, nor an old challenge's.
    assert_eq!(
        nk.open_share(&sealed, "tenant", b"chal-1").unwrap_err(),
        KeySplitError::Open
    );
    assert_eq!(
        nk.open_share(&sealed, "verifier", b"chal-2").unwrap_err(),
        KeySplitError::Open
    );
    // A sealed non-share (wrong length) under the right context is refused as such.
    let odd = seal(&nk.public(), &share_info("verifier"), b"chal-1", &[1u8; 31]).unwrap();
    assert!(matches!(
        nk.open_share(&odd, "verifier", b"chal-1"),
        Err(KeySplitError::ShareLength { len: 31, .. })
    ));
}

/// Enrollment to unlock, every hop: shares wrapped at rest under role master keys, unwrapped
/// and sealed to NK after attestation, opened and combined by the agent.
#[test]
fn full_release_flow() {
    let luks_key = [0x3cu8; 64];
    let m = enroll_material(AGENT, &luks_key).unwrap();
    let (verifier_master, tenant_master) = (
        MasterKey::generate().unwrap(),
        MasterKey::generate().unwrap(),
    );
    let v_row = verifier_master
        .wrap_share(&m.v, &wrap_context("verifier", AGENT))
        .unwrap();
    let u_row = tenant_master
        .wrap_share(&m.u, &wrap_context("tenant", AGENT))
        .unwrap();
    let ct_row = m.payload_ct.as_bytes().to_vec();
    drop(m);

    let nk = NkPrivate::generate().unwrap();
    let v = verifier_master
        .unwrap_share(&v_row, &wrap_context("verifier", AGENT))
        .unwrap();
    let u = tenant_master
        .unwrap_share(&u_row, &wrap_context("tenant", AGENT))
        .unwrap();
    let v_sealed = seal_share(&nk.public(), "verifier", b"c-v", &v).unwrap();
    let u_sealed = seal_share(&nk.public(), "tenant", b"c-t", &u).unwrap();

    let v = nk.open_share(&v_sealed, "verifier", b"c-v").unwrap();
    let u = nk.open_share(&u_sealed, "tenant", b"c-t").unwrap();
    let ct = verifier_core::keysplit::PayloadCiphertext::from_bytes(&ct_row).unwrap();
    let payload = decrypt_payload(&combine(&u, &v), AGENT, &ct).unwrap();
    assert_eq!(payload.as_slice(), &luks_key);
}

/// A man in the middle who replaces NK with his own can open what the roles seal to his key,
/// but the quote's extraData commits to the agent's NK, so the roles' validation of the quote
/// (which recomputes extraData from the NK they are asked to seal to) sees a different value.
/// And the agent's real NK cannot open shares sealed to the swapped key.
#[test]
fn swapped_nk_breaks_the_quote_binding() {
    let agent_nk = NkPrivate::generate().unwrap();
    let mitm_nk = NkPrivate::generate().unwrap();
    let tree = MerkleTree::new(&[[1u8; 32], [2u8; 32]]).unwrap();
    let quoted = quote_extra_data(&tree.root(), agent_nk.public().as_bytes());
    assert_ne!(
        quote_extra_data(&tree.root(), mitm_nk.public().as_bytes()),
        quoted
    );
    let share = Share::from_bytes([8u8; 32]);
    let sealed = seal_share(&mitm_nk.public(), "verifier", b"c", &share).unwrap();
    assert_eq!(
        agent_nk.open_share(&sealed, "verifier", b"c").unwrap_err(),
        KeySplitError::Open
    );
}

#[test]
fn nk_debug_shows_only_public_half() {
    let nk = NkPrivate::generate().unwrap();
    let shown = format!("{nk:?}");
    assert!(shown.starts_with("NkPrivate"), "{shown}");
    assert!(shown.contains("public"), "{shown}");
}
