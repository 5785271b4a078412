//! Quote verification against quotes recorded from real (v)TPMs: keylime (tpm2-tools files),
//! trustee (TPM verifier evidence) and Azure SEV-SNP vTPM (AK from the HCL report).

// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::path::PathBuf;

use base64::Engine;
use verifier_core::quote::{verify_quote, AkPublic, VerifyError};
use verifier_core::wire::{
    Attest, Attested, Digest, HashAlg, KeyScheme, ObjectAttributes, PcrSelection, PcrValues,
    Public, PublicKey, Reader, Signature, SymDef,
};

fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata"
            ))
        });
    assert!(
        dir.join("quote").is_dir(),
        "test data not found at {} (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

fn read(rel: &str) -> Vec<u8> {
    let p = testdata().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// tpm2-tools' `-o` PCR file: a host-endian (little-endian here) dump of TPML_PCR_SELECTION
/// (count u32, 16 padded 8-byte TPMS_PCR_SELECTION slots) then a u32 count of TPML_DIGESTs,
/// each a u32 count and 8 slots of TPM2B_DIGEST (u16 size + 64-byte buffer). Values follow
/// the selection order. Returns the selection (re-encoded in TPM order) and the values.
fn parse_tpm2_tools_pcrs(b: &[u8]) -> (PcrSelection, PcrValues) {
    let mut r = Reader::new("tpm2-tools pcrs", b);
    let count = r.u32_le("count").unwrap() as usize;
    let mut sel = Vec::new();
    for i in 0..16 {
        let hash = r.u16_le("hash").unwrap();
        let size = r.u8("sizeofSelect").unwrap();
        let select = r.take_array::<4>("pcrSelect").unwrap();
        r.u8("pad").unwrap();
        if i < count {
            sel.extend_from_slice(&hash.to_be_bytes());
            sel.push(size);
            sel.extend_from_slice(&select[..size as usize]);
        }
    }
    let mut tpml = (count as u32).to_be_bytes().to_vec();
    tpml.extend_from_slice(&sel);
    let selection = PcrSelection::parse(&tpml).unwrap();
    let mut digests = Vec::new();
    let lists = r.u32_le("lists").unwrap();
    for _ in 0..lists {
        let n = r.u32_le("digests.count").unwrap();
        for j in 0..8 {
            let size = r.u16_le("size").unwrap() as usize;
            let buf = r.take(64, "buffer").unwrap();
            if j < n {
                digests.push(buf[..size].to_vec());
            }
        }
    }
    r.finish().unwrap();
    let mut values = PcrValues::new();
    let mut it = digests.into_iter();
    for (alg, index) in selection.iter() {
        let d = it.next().expect("fewer digests than selected PCRs");
        assert!(values.insert(index, Digest::from_slice(alg, &d).unwrap()));
    }
    assert!(it.next().is_none(), "more digests than selected PCRs");
    (selection, values)
}

fn keylime() -> (AkPublic, Vec<u8>, Signature, PcrSelection, PcrValues) {
    let ak =
        AkPublic::try_from(Public::parse_tpm2b(&read("quote/keylime/ak.pub")).unwrap()).unwrap();
    let attest = read("quote/keylime/quote.out");
    let sig = Signature::parse(&read("quote/keylime/quotesig.out")).unwrap();
    let (sel, pcrs) = parse_tpm2_tools_pcrs(&read("quote/keylime/quotepcr.out"));
    (ak, attest, sig, sel, pcrs)
}

#[test]
fn keylime_public_areas_round_trip_and_name() {
    let ak_bytes = read("quote/keylime/ak.pub");
    let ak = Public::parse_tpm2b(&ak_bytes).unwrap();
    assert_eq!(ak.marshal_tpm2b(), ak_bytes);
    assert_eq!(ak.name(), read("quote/keylime/ak.name"));
    assert_eq!(ak.scheme(), KeyScheme::RsaSsa(HashAlg::Sha256));
    assert_eq!(ak.rsa_exponent(), Some(65537));

    let ek_bytes = read("quote/keylime/ek.pub");
    let ek = Public::parse_tpm2b(&ek_bytes).unwrap();
    assert_eq!(ek.marshal_tpm2b(), ek_bytes);
    assert!(ek
        .attributes()
        .contains(ObjectAttributes::DECRYPT | ObjectAttributes::RESTRICTED));
    assert!(matches!(ek.symmetric(), SymDef::Aes { key_bits: 128, .. }));
    assert_eq!(ek.auth_policy().len(), 32);
    // The SPKI we build equals the PEM keylime exported for the EK and the AK.
    for (p, pem) in [
        (&ek, "quote/keylime/ekpub.pem"),
        (&ak, "quote/keylime/akpub.pem"),
    ] {
        let pem = String::from_utf8(read(pem)).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(p.spki_der().unwrap(), der);
    }
}

#[test]
fn keylime_quote_verifies() {
    let (ak, attest, sig, sel, pcrs) = keylime();
    let parsed = Attest::parse(&attest).unwrap();
    assert_eq!(parsed.marshal(), attest);
    let Attested::Quote(info) = &parsed.attested else {
        panic!("not a quote")
    };
    assert_eq!(info.pcr_select, sel);
    assert_eq!(sig.marshal(), read("quote/keylime/quotesig.out"));
    let extra = parsed.extra_data.clone();
    assert_eq!(extra.len(), 20);

    let q = verify_quote(&ak, &extra, &attest, &sig, &pcrs).unwrap();
    assert_eq!(q.pcr_selection(), &sel);
    assert_eq!(q.pcrs(), &pcrs);
    assert_eq!(q.hash_alg(), HashAlg::Sha256);
    assert_eq!(q.extra_data(), extra.as_slice());
    assert_eq!(q.qualified_signer(), parsed.qualified_signer.as_slice());
    assert_eq!(q.clock_info(), parsed.clock_info);
    assert!(q.safe());
    assert_eq!(
        q.pcrs()
            .bank(HashAlg::Sha256)
            .map(|(i, _)| i)
            .collect::<Vec<_>>(),
        [15, 16, 22]
    );

    // Each one-thing forgery of the real quote is refused with its own error.
    let mut bad = extra.clone();
    bad[0] ^= 1;
    assert_eq!(
        verify_quote(&ak, &bad, &attest, &sig, &pcrs),
        Err(VerifyError::ExtraDataMismatch)
    );
    let mut sig_bad = sig.clone();
    if let Signature::RsaSsa { sig, .. } = &mut sig_bad {
        sig[100] ^= 0x40;
    }
    assert_eq!(
        verify_quote(&ak, &extra, &attest, &sig_bad, &pcrs),
        Err(VerifyError::SignatureInvalid)
    );
    let mut att_bad = attest.clone();
    let n = att_bad.len();
    att_bad[n - 1] ^= 1; // last byte of pcrDigest: no longer what was signed
    assert_eq!(
        verify_quote(&ak, &extra, &att_bad, &sig, &pcrs),
        Err(VerifyError::SignatureInvalid)
    );
    let mut pcr_bad = pcrs.clone();
    pcr_bad.insert(16, Digest::zero(HashAlg::Sha256));
    assert_eq!(
        verify_quote(&ak, &extra, &attest, &sig, &pcr_bad),
        Err(VerifyError::PcrDigestMismatch)
    );
    let mut pcr_missing = PcrValues::new();
    for (i, d) in pcrs.bank(HashAlg::Sha256).filter(|(i, _)| *i != 22) {
        pcr_missing.insert(i, *d);
    }
    assert_eq!(
        verify_quote(&ak, &extra, &attest, &sig, &pcr_missing),
        Err(VerifyError::MissingPcr {
            alg: HashAlg::Sha256,
            index: 22
        })
    );
    // A value in another bank or an unselected PCR is ignored, and not exposed.
    let mut extra_pcrs = pcrs.clone();
    extra_pcrs.insert(0, Digest::zero(HashAlg::Sha1));
    extra_pcrs.insert(7, Digest::zero(HashAlg::Sha256));
    let q = verify_quote(&ak, &extra, &attest, &sig, &extra_pcrs).unwrap();
    assert_eq!(q.pcrs(), &pcrs);
}

#[test]
fn keylime_quote_refused_with_another_ak() {
    let (_, attest, sig, _, pcrs) = keylime();
    let extra = Attest::parse(&attest).unwrap().extra_data;
    let other = verifier_core::quote::software::SoftwareAk::generate_rsa_2048().unwrap();
    assert_eq!(
        verify_quote(other.ak(), &extra, &attest, &sig, &pcrs),
        Err(VerifyError::SignatureInvalid)
    );
}

/// An AK known only by its RSA modulus (trustee and Azure give no TPMT_PUBLIC): wrap it in
/// the public area such an AK has, RSASSA-SHA256.
fn rsa_ak(n: &[u8]) -> AkPublic {
    let public = Public::new(
        HashAlg::Sha256,
        verifier_core::quote::software::ak_attributes(),
        &[],
        PublicKey::Rsa {
            symmetric: SymDef::Null,
            scheme: KeyScheme::RsaSsa(HashAlg::Sha256),
            key_bits: 2048,
            exponent: 0,
            modulus: n.to_vec(),
        },
    )
    .unwrap();
    AkPublic::try_from(public).unwrap()
}

fn sha256_pcrs(list: &serde_json::Value) -> PcrValues {
    let mut v = PcrValues::new();
    for (i, h) in list.as_array().unwrap().iter().enumerate() {
        assert!(v.insert(
            i as u8,
            Digest::from_hex(HashAlg::Sha256, h.as_str().unwrap()).unwrap()
        ));
    }
    v
}

#[test]
fn trustee_tpm_evidence_verifies() {
    let d: serde_json::Value =
        serde_json::from_slice(&read("quote/trustee/tpm_evidence.json")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let spki = b64.decode(d["ak_public"].as_str().unwrap()).unwrap();
    let key = aws_lc_rs::rsa::PublicKey::from_der(&spki).unwrap();
    let ak = rsa_ak(key.modulus().big_endian_without_leading_zero());
    assert_eq!(ak.public().spki_der().unwrap(), spki);
    let attest = b64
        .decode(d["tpm_quote"]["message"].as_str().unwrap())
        .unwrap();
    let sig = Signature::parse(
        &b64.decode(d["tpm_quote"]["signature"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let pcrs = sha256_pcrs(&d["tpm_quote"]["pcrs"]);
    let parsed = Attest::parse(&attest).unwrap();
    assert_eq!(parsed.marshal(), attest);
    // The evidence carries no separate nonce: trustee's report data is the 64-byte extraData.
    assert_eq!(parsed.extra_data.len(), 64);
    let q = verify_quote(&ak, &parsed.extra_data, &attest, &sig, &pcrs).unwrap();
    assert_eq!(q.pcrs().bank(HashAlg::Sha256).count(), 24);
    let mut wrong = parsed.extra_data.clone();
    wrong.pop();
    assert_eq!(
        verify_quote(&ak, &wrong, &attest, &sig, &pcrs),
        Err(VerifyError::ExtraDataMismatch)
    );
}

/// The AK modulus from the HCL report's runtime data: a JSON object with a JWK set whose
/// key `HCLAkPub` is the AK.
fn azure_ak(report: &[u8]) -> AkPublic {
    let start = report
        .windows(8)
        .position(|w| w == b"{\"keys\":")
        .expect("runtime JSON");
    let mut de =
        serde_json::Deserializer::from_slice(&report[start..]).into_iter::<serde_json::Value>();
    let json = de.next().unwrap().unwrap();
    let jwk = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "HCLAkPub")
        .unwrap();
    assert_eq!(jwk["e"], "AQAB");
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk["n"].as_str().unwrap())
        .unwrap();
    rsa_ak(&n)
}

#[test]
fn azure_snp_vtpm_quote_verifies() {
    let ak = azure_ak(&read("quote/trustee-az-snp-vtpm/hcl-report.bin"));
    let d: serde_json::Value =
        serde_json::from_slice(&read("quote/trustee-az-snp-vtpm/tpm-quote-v1.json")).unwrap();
    let attest = hex::decode(d["message"].as_str().unwrap()).unwrap();
    let sig = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: hex::decode(d["signature"].as_str().unwrap()).unwrap(),
    };
    let pcrs = sha256_pcrs(&d["pcrs"]);
    let q = verify_quote(&ak, b"challenge", &attest, &sig, &pcrs).unwrap();
    assert_eq!(q.extra_data(), b"challenge");
    assert_eq!(q.pcrs(), &pcrs);

    let mut wrong_pcr = pcrs.clone();
    wrong_pcr.insert(23, Digest::filled(HashAlg::Sha256, 0xff));
    assert_eq!(
        verify_quote(&ak, b"challenge", &attest, &sig, &wrong_pcr),
        Err(VerifyError::PcrDigestMismatch)
    );
    assert_eq!(
        verify_quote(&ak, b"challengf", &attest, &sig, &pcrs),
        Err(VerifyError::ExtraDataMismatch)
    );

    // The binary .msg/.sig pair parses, but it is not signed by the AK of this HCL report
    // (checked independently: s^e mod n has no PKCS#1 structure), so it must be refused.
    let msg = read("quote/trustee-az-snp-vtpm/tpm-quote.msg");
    let parsed = Attest::parse(&msg).unwrap();
    assert_eq!(parsed.marshal(), msg);
    assert_eq!(parsed.extra_data, b"challenge");
    let sig2 = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: read("quote/trustee-az-snp-vtpm/tpm-quote.sig"),
    };
    assert_eq!(
        verify_quote(&ak, b"challenge", &msg, &sig2, &pcrs),
        Err(VerifyError::SignatureInvalid)
    );
}

#[test]
fn azure_tdx_vtpm_quote_verifies() {
    let ak = azure_ak(&read("quote/trustee-az-tdx-vtpm/hcl-report.bin"));
    let d: serde_json::Value =
        serde_json::from_slice(&read("quote/trustee-az-tdx-vtpm/tpm-quote-v1.json")).unwrap();
    let attest = hex::decode(d["message"].as_str().unwrap()).unwrap();
    let sig = Signature::RsaSsa {
        hash: HashAlg::Sha256,
        sig: hex::decode(d["signature"].as_str().unwrap()).unwrap(),
    };
    let pcrs = sha256_pcrs(&d["pcrs"]);
    let extra = Attest::parse(&attest).unwrap().extra_data;
    let q = verify_quote(&ak, &extra, &attest, &sig, &pcrs).unwrap();
    assert_eq!(q.pcrs(), &pcrs);
    // Cross-check: the SNP vTPM's AK does not verify the TDX vTPM's quote.
    let snp_ak = azure_ak(&read("quote/trustee-az-snp-vtpm/hcl-report.bin"));
    assert_eq!(
        verify_quote(&snp_ak, &extra, &attest, &sig, &pcrs),
        Err(VerifyError::SignatureInvalid)
    );
}

#[test]
fn mutated_real_inputs_never_panic() {
    let inputs = [
        read("quote/keylime/ak.pub"),
        read("quote/keylime/ek.pub"),
        read("quote/keylime/quote.out"),
        read("quote/keylime/quotesig.out"),
    ];
    for input in &inputs {
        for i in 0..input.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff, input[i] ^ 0x01] {
                let mut m = input.clone();
                m[i] = v;
                let _ = Public::parse_tpm2b(&m);
                let _ = Public::parse(&m);
                let _ = Attest::parse(&m);
                let _ = Signature::parse(&m);
                let _ = PcrSelection::parse(&m);
            }
            let _ = Public::parse_tpm2b(&input[..i]);
            let _ = Attest::parse(&input[..i]);
            let _ = Signature::parse(&input[..i]);
        }
    }
}
