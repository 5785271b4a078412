//! The TPM side of attestation against a real TPM (swtpm): the quote the agent sends must
//! verify with verifier-core exactly as the server will verify it, and the release extend
//! must make any later quote in the same boot fail the release-PCR policy rule.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{quiet_tss, skip, Swtpm};
use initrd_agent::tpm::{full_selection, Ak, EkKind, Tpm, RELEASE_EVENT};
use verifier_core::evidence::{validate, Expected, Submitted, ValidationError};
use verifier_core::keysplit::NkPrivate;
use verifier_core::merkle::{quote_extra_data, MerkleTree};
use verifier_core::policy::{Evaluator, Policy};
use verifier_core::quote::{verify_quote, AkPublic, VerifyError};
use verifier_core::wire::{
    Attest, BankSelection, Digest, HashAlg, PcrSelection, PcrValues, Public, Signature,
};

fn ak_public(ak: &Ak) -> AkPublic {
    AkPublic::try_from(Public::parse(ak.public()).unwrap()).unwrap()
}

fn selection(banks: &[(HashAlg, &[u8])]) -> PcrSelection {
    PcrSelection::new(
        banks
            .iter()
            .map(|(h, i)| BankSelection::new(*h, i).unwrap())
            .collect(),
    )
    .unwrap()
}

struct Fixture {
    _sw: Swtpm,
    tpm: Tpm,
    ak: Ak,
}

fn fixture() -> Option<Fixture> {
    if skip() {
        return None;
    }
    quiet_tss();
    let sw = Swtpm::start();
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    let ek = tpm.create_ek(EkKind::EccP256).unwrap();
    let ak = tpm.create_ak(&ek).unwrap();
    Some(Fixture { _sw: sw, tpm, ak })
}

#[test]
fn quote_verifies_with_verifier_core() {
    let Some(mut f) = fixture() else { return };
    let banks = f.tpm.active_banks().unwrap();
    assert!(
        banks.contains(&HashAlg::Sha256),
        "swtpm has a sha256 bank: {banks:?}"
    );
    // More than 8 PCRs in two banks: PCR_Read must loop.
    let mut sel_banks: Vec<(HashAlg, &[u8])> = vec![(
        HashAlg::Sha256,
        &[0, 1, 2, 3, 4, 5, 6, 7, 10, 15, 16, 17, 23],
    )];
    if banks.contains(&HashAlg::Sha1) {
        sel_banks.push((HashAlg::Sha1, &[0, 7, 17]));
    }
    let sel = selection(&sel_banks);
    let extra: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap() ^ 0x5a);

    let q = f.tpm.quote_with_pcrs(&f.ak, &extra, &sel).unwrap();
    let ak = ak_public(&f.ak);
    let sig = Signature::parse(&q.quote.signature).unwrap();
    let verified = verify_quote(&ak, &extra, &q.quote.attest, &sig, &q.pcrs).unwrap();
    assert_eq!(verified.extra_data(), extra);
    assert_eq!(verified.pcr_selection().iter().count(), sel.iter().count());
    assert_eq!(verified.hash_alg(), HashAlg::Sha256);
    // The bytes sent are exactly what verifier-core marshals back: nothing was re-ordered.
    assert_eq!(
        Attest::parse(&q.quote.attest).unwrap().marshal(),
        q.quote.attest
    );

    // PCR values map index by index: after TPM2_Startup(CLEAR), PCR 17 (locality-reset
    // range) is all ones and the others read here are zero.
    for (alg, i) in sel.iter() {
        let v = q.pcrs.get(alg, i).unwrap();
        let expect = if i == 17 {
            Digest::filled(alg, 0xff)
        } else {
            Digest::zero(alg)
        };
        assert_eq!(*v, expect, "{alg}:{i}");
    }

    // Forgeries the server must refuse, refused by the same code here.
    let mut wrong = extra;
    wrong[0] ^= 1;
    assert_eq!(
        verify_quote(&ak, &wrong, &q.quote.attest, &sig, &q.pcrs).unwrap_err(),
        VerifyError::ExtraDataMismatch
    );
    let mut pcrs = PcrValues::new();
    for (alg, i) in sel.iter() {
        let v = if i == 7 {
            Digest::filled(alg, 7)
        } else {
            *q.pcrs.get(alg, i).unwrap()
        };
        pcrs.insert(i, v);
    }
    assert_eq!(
        verify_quote(&ak, &extra, &q.quote.attest, &sig, &pcrs).unwrap_err(),
        VerifyError::PcrDigestMismatch
    );
    let mut tampered = q.quote.attest.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        verify_quote(&ak, &extra, &tampered, &sig, &q.pcrs).unwrap_err(),
        VerifyError::SignatureInvalid
    );
}

#[test]
fn quote_from_another_ak_does_not_verify() {
    let Some(mut f) = fixture() else { return };
    let other = Swtpm::start();
    let mut other_tpm = Tpm::open(&other.tcti()).unwrap();
    let other_ek = other_tpm.create_ek(EkKind::EccP256).unwrap();
    let other_ak = other_tpm.create_ak(&other_ek).unwrap();
    let sel = selection(&[(HashAlg::Sha256, &[0, 15])]);
    let extra = [9u8; 32];
    let q = other_tpm.quote_with_pcrs(&other_ak, &extra, &sel).unwrap();
    let sig = Signature::parse(&q.quote.signature).unwrap();
    assert_eq!(
        verify_quote(&ak_public(&f.ak), &extra, &q.quote.attest, &sig, &q.pcrs).unwrap_err(),
        VerifyError::SignatureInvalid
    );
    // Sanity: our own TPM's quote verifies with our AK.
    let q = f.tpm.quote_with_pcrs(&f.ak, &extra, &sel).unwrap();
    let sig = Signature::parse(&q.quote.signature).unwrap();
    verify_quote(&ak_public(&f.ak), &extra, &q.quote.attest, &sig, &q.pcrs).unwrap();
}

/// What the server does with one role's evidence: Merkle proof, NK binding, quote, then the
/// default policy (whose only rule here is the release PCR).
fn server_verdict(
    tpm: &mut Tpm,
    ak: &Ak,
    sel: &PcrSelection,
) -> Result<verifier_core::policy::Verdict, ValidationError> {
    let nonces = [[1u8; 32], [2u8; 32]];
    let tree = MerkleTree::new(&nonces).unwrap();
    let nk = NkPrivate::generate().unwrap().public();
    let extra = quote_extra_data(&tree.root(), nk.as_bytes());
    let q = tpm.quote_with_pcrs(ak, &extra, sel).unwrap();
    let sig = Signature::parse(&q.quote.signature).unwrap();
    let akp = ak_public(ak);
    let proof = tree.proof(1).unwrap();
    let evidence = validate(
        Expected {
            ak: &akp,
            nonce: &nonces[1],
        },
        Submitted {
            attest: &q.quote.attest,
            signature: &sig,
            pcrs: &q.pcrs,
            nk_pub: nk.as_bytes(),
            proof: &proof,
            event_log: None,
            ima_log: None,
        },
    )?;
    let policy = Policy::from_json(r#"{"version": 1}"#).unwrap();
    Ok(policy.evaluate(&evidence))
}

#[test]
fn release_extend_makes_the_next_quote_fail_the_release_rule() {
    let Some(mut f) = fixture() else { return };
    let sel = selection(&[(HashAlg::Sha256, &[0, 7, 15])]);

    let before = server_verdict(&mut f.tpm, &f.ak, &sel).unwrap();
    assert!(before.accepted(), "{before}");

    f.tpm.extend_release(15).unwrap();

    // The PCR now holds exactly H(0 || H(event)) in every active bank.
    let banks = f.tpm.active_banks().unwrap();
    let all = f.tpm.read_pcrs(&full_selection(&banks)).unwrap();
    for alg in banks {
        let mut expect = Digest::zero(alg);
        expect.extend(alg.hash(RELEASE_EVENT).as_bytes());
        assert_eq!(*all.get(alg, 15).unwrap(), expect, "{alg}:15");
        assert_eq!(
            *all.get(alg, 14).unwrap(),
            Digest::zero(alg),
            "{alg}:14 untouched"
        );
    }

    // Genuine evidence, but the policy refuses it: this boot already released.
    let after = server_verdict(&mut f.tpm, &f.ak, &sel).unwrap();
    assert!(!after.accepted());
    assert!(
        after
            .failures
            .iter()
            .any(|r| r.rule.starts_with("release_pcr")),
        "{after}"
    );
}

#[test]
fn full_selection_reads_all_24_pcrs_of_every_bank() {
    let Some(mut f) = fixture() else { return };
    let banks = f.tpm.active_banks().unwrap();
    let values = f.tpm.read_pcrs(&full_selection(&banks)).unwrap();
    for alg in &banks {
        assert_eq!(values.bank(*alg).count(), 24, "{alg}");
    }
}

#[test]
fn unallocated_bank_is_an_error_not_a_hang() {
    if skip() {
        return;
    }
    quiet_tss();
    let sw = Swtpm::start_with_banks("sha256");
    let mut tpm = Tpm::open(&sw.tcti()).unwrap();
    assert_eq!(tpm.active_banks().unwrap(), vec![HashAlg::Sha256]);
    let sel = selection(&[(HashAlg::Sha256, &[0]), (HashAlg::Sha1, &[0, 1])]);
    let err = tpm.read_pcrs(&sel).unwrap_err();
    assert!(err.to_string().contains("no active PCR bank sha1"), "{err}");
    // The release extend touches only the allocated bank, and succeeds.
    tpm.extend_release(15).unwrap();
    let sel = selection(&[(HashAlg::Sha256, &[15])]);
    let mut expect = Digest::zero(HashAlg::Sha256);
    expect.extend(HashAlg::Sha256.hash(RELEASE_EVENT).as_bytes());
    assert_eq!(
        *tpm.read_pcrs(&sel)
            .unwrap()
            .get(HashAlg::Sha256, 15)
            .unwrap(),
        expect
    );
}
