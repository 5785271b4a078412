//! Real Debian-signed images and forgeries made with sbsign (provenance: testdata/README.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::predict::{authenticode, image_signatures};

const DEBIAN_CA: &[u8] = include_bytes!("testdata/debian-secure-boot-ca.der");
const DEBIAN_LINUX_SIGNER: &[u8] = include_bytes!("testdata/debian-signer-2022-linux.der");
const FORGED_CA: &[u8] = include_bytes!("testdata/forged-ca.der");
const FBX64: &[u8] = include_bytes!("testdata/fbx64.efi.signed");
const KERNEL_SIG: &[u8] = include_bytes!("testdata/linux-6.1.0-57-amd64.p7");
const FORGED_CHAIN: &[u8] = include_bytes!("testdata/fbx64.forged-chain.p7");
const TLS_SIGNER: &[u8] = include_bytes!("testdata/fbx64.tls-signer.p7");
const CA_SIGNED: &[u8] = include_bytes!("testdata/fbx64.ca-signed.p7");
const EC_SIGNED: &[u8] = include_bytes!("testdata/fbx64.ec-signer.p7");
const EC_CA: &[u8] = include_bytes!("testdata/test-ec-ca.der");

/// 2027-06-01, inside every test certificate's validity.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_811_808_000)
}

fn trust(certs: &[&[u8]]) -> TrustedSigners {
    TrustedSigners::from_der(&certs.iter().map(|c| c.to_vec()).collect::<Vec<_>>()).unwrap()
}

fn fbx64() -> (Digest, Vec<u8>) {
    let digest = authenticode(FBX64, HashAlg::Sha256).unwrap();
    let sigs = image_signatures(FBX64).unwrap();
    assert_eq!(sigs.len(), 1, "fbx64 carries one signature");
    (digest, sigs[0].clone())
}

#[test]
fn debian_signed_fallback_chains_to_debian_ca() {
    let (digest, sig) = fbx64();
    let v = verify(&sig, &digest, &trust(&[DEBIAN_CA]), now()).unwrap();
    assert_eq!(v.digest, digest);
    assert_eq!(v.signer, "CN=Debian Secure Boot Signer 2022 - shim");
}

/// The installed Debian kernel, when the machine has one (the test data holds only its
/// signature, not the 8 MB image).
#[test]
fn installed_debian_kernel_chains_to_debian_ca() {
    let Some(path) = std::fs::read_dir("/boot").ok().and_then(|d| {
        d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.to_string_lossy().contains("vmlinuz-") && p.to_string_lossy().ends_with("-amd64")
        })
    }) else {
        eprintln!("SKIPPED: no /boot/vmlinuz-*-amd64 on this machine (install linux-image-amd64 to run it)");
        return;
    };
    let Ok(image) = std::fs::read(&path) else {
        eprintln!("SKIPPED: {} is not readable", path.display());
        return;
    };
    let digest = authenticode(&image, HashAlg::Sha256).unwrap();
    let sigs = image_signatures(&image).unwrap();
    assert!(!sigs.is_empty(), "{} is not signed", path.display());
    let v = verify(&sigs[0], &digest, &trust(&[DEBIAN_CA]), SystemTime::now()).unwrap();
    assert_eq!(v.signer, "CN=Debian Secure Boot Signer 2022 - linux");
}

#[test]
fn a_directly_trusted_signer_certificate_is_enough() {
    let (digest, sig) = fbx64();
    // The kernel signer is trusted, not the shim signer: refused.
    assert!(matches!(
        verify(&sig, &digest, &trust(&[DEBIAN_LINUX_SIGNER]), now()),
        Err(ImageSignatureError::Untrusted { .. })
    ));
    // The kernel's own signature, with its signer trusted directly: the digest it signs.
    let parsed = authenticode::AuthenticodeSignature::from_bytes(KERNEL_SIG).unwrap();
    let kdigest = Digest::from_slice(HashAlg::Sha256, parsed.digest()).unwrap();
    let v = verify(KERNEL_SIG, &kdigest, &trust(&[DEBIAN_LINUX_SIGNER]), now()).unwrap();
    assert_eq!(v.signer, "CN=Debian Secure Boot Signer 2022 - linux");
}

#[test]
fn the_test_signer_is_accepted_when_its_ca_is_trusted() {
    // The control for the forgeries below: sbsign's signatures verify when their CA is trusted.
    let (digest, _) = fbx64();
    let v = verify(FORGED_CHAIN, &digest, &trust(&[FORGED_CA]), now()).unwrap();
    assert_eq!(v.signer, "CN=Debian Secure Boot Signer 2022 - linux");
}

#[test]
fn forged_untrusted_signer_is_refused() {
    let (digest, _) = fbx64();
    let e = verify(CA_SIGNED, &digest, &trust(&[DEBIAN_CA]), now()).unwrap_err();
    assert!(matches!(e, ImageSignatureError::Untrusted { .. }), "{e}");
}

#[test]
fn forged_chain_to_a_same_named_ca_is_refused() {
    // The signer claims the real Debian CA as issuer by name; the carried forged CA has that
    // name too; neither verifies with the real CA's key.
    let (digest, _) = fbx64();
    let e = verify(FORGED_CHAIN, &digest, &trust(&[DEBIAN_CA]), now()).unwrap_err();
    match e {
        ImageSignatureError::Untrusted { source, .. } => {
            assert!(
                matches!(source, EkCertError::BadSignature { .. }),
                "{source}"
            )
        }
        other => panic!("{other}"),
    }
}

#[test]
fn valid_signature_over_another_digest_is_refused() {
    // The real kernel signature, offered for the fallback's digest.
    let (digest, _) = fbx64();
    let e = verify(KERNEL_SIG, &digest, &trust(&[DEBIAN_CA]), now()).unwrap_err();
    assert!(
        matches!(e, ImageSignatureError::DigestMismatch { .. }),
        "{e}"
    );
}

#[test]
fn another_bank_is_refused() {
    let (_, sig) = fbx64();
    let sha384 = authenticode(FBX64, HashAlg::Sha384).unwrap();
    let e = verify(&sig, &sha384, &trust(&[DEBIAN_CA]), now()).unwrap_err();
    assert!(
        matches!(e, ImageSignatureError::DigestAlgorithm { .. }),
        "{e}"
    );
}

/// Position of `needle` in `hay` (exactly once).
fn find_once(hay: &[u8], needle: &[u8]) -> usize {
    let at: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "needle found {} times", at.len());
    at[0]
}

#[test]
fn tampered_message_digest_attribute_is_refused() {
    let (digest, sig) = fbx64();
    // messageDigest: OID 1.2.840.113549.1.9.4, then SET { OCTET STRING (32) }.
    let oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04,
    ];
    let at = find_once(&sig, &oid) + oid.len() + 4;
    let mut forged = sig.clone();
    forged[at] ^= 1;
    let e = verify(&forged, &digest, &trust(&[DEBIAN_CA]), now()).unwrap_err();
    assert!(
        matches!(e, ImageSignatureError::MessageDigestMismatch),
        "{e}"
    );
}

#[test]
fn tampered_image_digest_in_the_signed_content_is_refused() {
    // The machine asks for digest X and edits the signed content to say X: the
    // messageDigest attribute no longer hashes the content.
    let (digest, sig) = fbx64();
    let at = find_once(&sig, digest.as_bytes());
    let mut forged = sig.clone();
    forged[at] ^= 1;
    let mut x = *digest.as_bytes().first().unwrap();
    x ^= 1;
    let mut wanted = digest.as_bytes().to_vec();
    wanted[0] = x;
    let wanted = Digest::from_slice(HashAlg::Sha256, &wanted).unwrap();
    let e = verify(&forged, &wanted, &trust(&[DEBIAN_CA]), now()).unwrap_err();
    assert!(
        matches!(e, ImageSignatureError::MessageDigestMismatch),
        "{e}"
    );
}

#[test]
fn tampered_signature_value_is_refused() {
    let (digest, sig) = fbx64();
    // The RSA signature is the last 256 bytes of the signer info (no unsigned attributes).
    let parsed = authenticode::AuthenticodeSignature::from_bytes(&sig).unwrap();
    let at = find_once(&sig, parsed.signature());
    let mut forged = sig.clone();
    forged[at + 100] ^= 1;
    let e = verify(&forged, &digest, &trust(&[DEBIAN_CA]), now()).unwrap_err();
    assert!(matches!(e, ImageSignatureError::BadSignature), "{e}");
}

#[test]
fn non_code_signing_signer_is_refused() {
    let (digest, _) = fbx64();
    let e = verify(TLS_SIGNER, &digest, &trust(&[FORGED_CA]), now()).unwrap_err();
    assert!(matches!(e, ImageSignatureError::NotCodeSigning(_)), "{e}");
    // Signed by the CA's own key (a CA certificate as the signer).
    let e = verify(CA_SIGNED, &digest, &trust(&[FORGED_CA]), now()).unwrap_err();
    assert!(matches!(e, ImageSignatureError::NotCodeSigning(_)), "{e}");
}

#[test]
fn expired_signer_is_refused() {
    // Debian Secure Boot Signer 2022 expires in August 2032.
    let (digest, sig) = fbx64();
    let later = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let e = verify(&sig, &digest, &trust(&[DEBIAN_CA]), later).unwrap_err();
    match e {
        ImageSignatureError::Untrusted { source, .. } => {
            assert!(matches!(source, EkCertError::Expired { .. }), "{source}")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn truncated_and_garbage_signatures_are_refused_without_panic() {
    let (digest, sig) = fbx64();
    let trusted = trust(&[DEBIAN_CA]);
    for len in 0..sig.len() {
        assert!(
            verify(&sig[..len], &digest, &trusted, now()).is_err(),
            "{len}"
        );
    }
    // The one byte the signer's signature does not cover and whose flip still decodes: the
    // NULL parameters of the signer info's signatureAlgorithm (rsaEncryption), which then
    // read as an unused [5]; every other flip is refused.
    let rsa_null = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let params = sig
        .windows(rsa_null.len())
        .rposition(|w| w == rsa_null)
        .unwrap()
        + 11;
    for i in 0..sig.len() {
        let mut flipped = sig.clone();
        flipped[i] ^= 0x80;
        let r = verify(&flipped, &digest, &trusted, now());
        assert!(r.is_err() || i == params, "byte {i}");
    }
    assert!(matches!(
        verify(&vec![0x30; MAX_SIGNATURE + 1], &digest, &trusted, now()),
        Err(ImageSignatureError::TooLarge(_))
    ));
}

#[test]
fn unsigned_and_junk_images_have_no_signatures() {
    assert!(image_signatures(b"MZ").is_err());
    // Strip the certificate-table entry from the real image: no signature.
    let mut unsigned = FBX64.to_vec();
    let pe = u32::from_le_bytes(unsigned[0x3c..0x40].try_into().unwrap()) as usize;
    // PE32+ optional header: data directory 4 (security) at offset 24 + 112 + 4*8.
    let dir = pe + 24 + 112 + 4 * 8;
    unsigned[dir..dir + 8].fill(0);
    assert!(image_signatures(&unsigned).unwrap().is_empty());
}

#[test]
fn an_ecdsa_p256_signer_verifies_and_its_forgery_does_not() {
    let (digest, _) = fbx64();
    let v = verify(EC_SIGNED, &digest, &trust(&[EC_CA]), now()).unwrap();
    assert_eq!(v.signer, "CN=Test EC signer");
    // Untrusted by a policy that trusts only Debian's CA.
    assert!(matches!(
        verify(EC_SIGNED, &digest, &trust(&[DEBIAN_CA]), now()),
        Err(ImageSignatureError::Untrusted { .. })
    ));
    // The ECDSA signature value altered (its last byte, inside the DER INTEGER s).
    let parsed = authenticode::AuthenticodeSignature::from_bytes(EC_SIGNED).unwrap();
    let at = find_once(EC_SIGNED, parsed.signature()) + parsed.signature().len() - 1;
    let mut forged = EC_SIGNED.to_vec();
    forged[at] ^= 1;
    let e = verify(&forged, &digest, &trust(&[EC_CA]), now()).unwrap_err();
    assert!(matches!(e, ImageSignatureError::BadSignature), "{e}");
}
