//! Entry points for the `cargo fuzz` targets (`verifier-core/fuzz/`) and for the regression
//! tests that replay what a fuzzer found (`tests/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes, runs every parser an attacker could reach with them
//! and, where a parse succeeds, checks the invariant that makes the result trustworthy:
//! re-encoding gives back the input (or an equal value). That matters beyond tidiness: the
//! server hashes and compares re-marshalled structures (AK names, agent ids, quote bodies), so
//! a parse that silently normalises would let two parties disagree on what was signed.
//!
//! Not part of the API: hidden from the docs, exempt from semver.

// A broken invariant must crash, because a crash is the only thing a fuzzer reports. This is
// the one non-test module where panicking is the point; parsers themselves still never panic
// (the lints on the rest of the crate enforce that), and nothing here runs in production.
#![allow(clippy::panic)]

use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::ekcert::{self, Certificate, TrustStore};
use crate::eventlog::{DevicePathNode, EventLog};
use crate::ima::MeasurementList;
use crate::keysplit::{self, MasterKey, NkPrivate, NkPublic, PayloadCiphertext, Share};
use crate::merkle::{self, InclusionProof};
use crate::policy::Policy;
use crate::proto::v1;
use crate::quote::software::SoftwareAk;
use crate::quote::verify_quote;
use crate::wire::{
    Attest, Digest, HashAlg, PcrSelection, PcrValues, Public, Reader, Signature, PCR_COUNT,
};

/// Reports a broken invariant.
#[track_caller]
fn violated(target: &str, what: &str) -> ! {
    panic!("fuzz invariant broken in `{target}`: {what}")
}

/// Fails unless `again == first`, printing both.
#[track_caller]
fn same<T: PartialEq + Debug>(target: &str, what: &str, first: &T, again: &T) {
    if first != again {
        violated(
            target,
            &format!("{what}\n first: {first:?}\n again: {again:?}"),
        );
    }
}

/// TPMS_ATTEST: marshalling a parsed quote body gives back exactly the signed bytes.
pub fn attest(data: &[u8]) {
    const T: &str = "attest";
    if let Ok(a) = Attest::parse(data) {
        let bytes = a.marshal();
        same(T, "marshal(parse(x)) == x", &data, &bytes.as_slice());
        same(
            T,
            "parse(marshal(a)) == a",
            &Ok(a.clone()),
            &Attest::parse(&bytes),
        );
        let _ = a.tag();
    }
    if let Ok((a, inner)) = Attest::parse_tpm2b(data) {
        same(
            T,
            "TPM2B: marshal == inner",
            &inner,
            &a.marshal().as_slice(),
        );
    }
}

/// TPMT_PUBLIC / TPM2B_PUBLIC, and everything the server derives from an untrusted public
/// area at registration: name, SPKI, AK checks and MakeCredential.
pub fn public(data: &[u8]) {
    const T: &str = "public";
    if let Ok(p) = Public::parse(data) {
        let bytes = p.marshal();
        same(T, "marshal(parse(x)) == x", &data, &bytes.as_slice());
        same(
            T,
            "parse(marshal(p)) == p",
            &Ok(p.clone()),
            &Public::parse(&bytes),
        );
        let tpm2b = p.marshal_tpm2b();
        same(
            T,
            "parse_tpm2b(marshal_tpm2b(p))",
            &Ok(p.clone()),
            &Public::parse_tpm2b(&tpm2b),
        );
        let name = p.name();
        if name.len() != 2 + p.name_alg().size() {
            violated(T, "name is not nameAlg || digest");
        }
        let _ = (p.spki_der(), p.ecc_point_uncompressed(), p.rsa_key_bits());
        let _ = crate::quote::AkPublic::try_from(p.clone());
        let _ = crate::makecred::make_credential(&p, &name, &[0x5a; 16]);
    }
    if let Ok(p) = Public::parse_tpm2b(data) {
        same(
            T,
            "TPM2B: marshal == x",
            &data,
            &p.marshal_tpm2b().as_slice(),
        );
    }
}

/// TPMT_SIGNATURE.
pub fn signature(data: &[u8]) {
    const T: &str = "signature";
    if let Ok(s) = Signature::parse(data) {
        let bytes = s.marshal();
        same(T, "marshal(parse(x)) == x", &data, &bytes.as_slice());
        same(
            T,
            "parse(marshal(s)) == s",
            &Ok(s.clone()),
            &Signature::parse(&bytes),
        );
        let _ = s.hash();
    }
}

/// TPML_PCR_SELECTION, alone and as the prefix of `tpm2_quote`'s PCR output.
pub fn pcr_selection(data: &[u8]) {
    const T: &str = "pcr_selection";
    if let Ok(s) = PcrSelection::parse(data) {
        let bytes = s.marshal();
        same(T, "marshal(parse(x)) == x", &data, &bytes.as_slice());
        same(
            T,
            "parse(marshal(s)) == s",
            &Ok(s.clone()),
            &PcrSelection::parse(&bytes),
        );
    }
    let mut r = Reader::new("fuzz", data);
    if let Ok(s) = PcrSelection::read(&mut r) {
        let consumed = data.get(..r.offset()).unwrap_or_default();
        same(
            T,
            "read: marshal == consumed prefix",
            &consumed,
            &s.marshal().as_slice(),
        );
        let mut zeros = PcrValues::new();
        for alg in HashAlg::ALL {
            for i in 0..PCR_COUNT {
                zeros.insert(i, Digest::zero(alg));
            }
        }
        for (_, index) in s.iter() {
            if index >= PCR_COUNT {
                violated(T, &format!("selected PCR {index} is not below 24"));
            }
        }
        for alg in HashAlg::ALL {
            if s.digest(alg, &zeros).is_err() {
                violated(T, "digest over a full set of PCR values failed");
            }
        }
        if let Ok(restricted) = s.restrict(&zeros) {
            let n = restricted
                .banks()
                .map(|b| restricted.bank(b).count())
                .sum::<usize>();
            same(
                T,
                "restrict keeps exactly the selection",
                &s.iter().count(),
                &n,
            );
        } else {
            violated(T, "restrict over a full set of PCR values failed");
        }
    }
}

/// A quote checked against fixed AKs: `len (u16 BE) || TPMS_ATTEST || TPMT_SIGNATURE`.
/// Exercises the signature-format conversions (ECDSA r/s lengths, RSA sizes, scheme mismatch)
/// that only run once a structurally valid quote is in hand.
pub fn quote(data: &[u8]) {
    static AKS: OnceLock<Vec<SoftwareAk>> = OnceLock::new();
    let aks = AKS.get_or_init(|| {
        [
            SoftwareAk::generate_ecc_p256(),
            SoftwareAk::generate_rsa_2048(),
        ]
        .into_iter()
        .flatten()
        .collect()
    });
    let mut r = Reader::new("fuzz", data);
    let Ok(len) = r.u16("len") else { return };
    let Ok(attest) = r.take(usize::from(len), "attest") else {
        return;
    };
    let Ok(sig) = Signature::parse(r.rest()) else {
        return;
    };
    let mut pcrs = PcrValues::new();
    for alg in HashAlg::ALL {
        for i in 0..PCR_COUNT {
            pcrs.insert(i, Digest::zero(alg));
        }
    }
    for ak in aks {
        if let Ok(q) = verify_quote(ak.ak(), &[0u8; 32], attest, &sig, &pcrs) {
            // Only a genuine signature gets here; the fuzzer cannot forge one.
            violated("quote", &format!("forged quote verified: {q:?}"));
        }
    }
}

/// UEFI event log: parse (which replays), then check the result is self-consistent and that
/// every event's typed decoding and JSON rendering (what `unlockctl` prints) hold up.
///
/// The padding rule (`eventlog` module docs) both ways: cutting the padding off, or appending
/// more (0xff or 0x00 bytes, by the input's parity, so one extra parse per input), gives the
/// same events, replay and StartupLocality; only `padding()` changes.
pub fn eventlog(data: &[u8]) {
    const T: &str = "eventlog";
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    check_eventlog(T, data, &log);
    // The measured-boot reader (Secure Boot, key databases, authorities, command lines) over
    // every PCR of every bank the log carries: untrusted event data, read by the policy.
    let covered = [true; crate::wire::PCR_COUNT as usize];
    for bank in log.replay().banks() {
        let state = crate::policy::boot::read(&log, bank, &covered);
        for a in &state.authorities {
            if a.event >= log.events().len() {
                violated(T, "an authority names an event the log does not have");
            }
        }
    }
    if log.padding() > 0 {
        let end = data.len().saturating_sub(log.padding());
        match data.get(..end).map(EventLog::parse) {
            Some(Ok(trimmed)) => {
                same_but_padding(T, "without its padding", &log, &trimmed);
                same(T, "no padding left once cut", &0, &trimmed.padding());
            }
            _ => violated(T, "log without its padding does not parse"),
        }
    }
    let mut longer = data.to_vec();
    let added: &[u8] = if data.len() % 2 == 0 {
        &[0xff]
    } else {
        &[0; 32]
    };
    longer.extend_from_slice(added);
    match EventLog::parse(&longer) {
        Ok(padded) => {
            same_but_padding(T, "with padding appended", &log, &padded);
            same(
                T,
                "appended bytes are padding",
                &(log.padding() + added.len()),
                &padded.padding(),
            );
        }
        Err(e) => violated(T, &format!("log with padding appended does not parse: {e}")),
    }
}

/// The same log up to its padding: events (position, PCR, type, digests, data), replay and
/// StartupLocality.
fn same_but_padding(target: &str, what: &str, log: &EventLog<'_>, other: &EventLog<'_>) {
    same(
        target,
        &format!("{what}: event count"),
        &log.events().len(),
        &other.events().len(),
    );
    for (a, b) in log.events().iter().zip(other.events()) {
        let key = |e: &crate::eventlog::Event<'_>| {
            (
                e.offset(),
                e.pcr_index(),
                e.event_type(),
                *e.digests(),
                e.data().to_vec(),
            )
        };
        same(target, &format!("{what}: event"), &key(a), &key(b));
    }
    same(
        target,
        &format!("{what}: replay (padding holds no events)"),
        log.replay(),
        other.replay(),
    );
    same(
        target,
        &format!("{what}: StartupLocality"),
        &log.startup_locality(),
        &other.startup_locality(),
    );
}

fn check_eventlog(target: &str, data: &[u8], log: &EventLog<'_>) {
    if log.events().is_empty() {
        violated(target, "a parsed log has no event");
    }
    if log.padding() > data.len() {
        violated(target, "padding longer than the input");
    }
    let mut last_offset = None;
    for (i, e) in log.events().iter().enumerate() {
        same(target, "events are numbered in order", &i, &e.index());
        if last_offset.is_some_and(|o| o >= e.offset()) || e.offset() >= data.len() {
            violated(
                target,
                &format!("event {i} offset {} out of order", e.offset()),
            );
        }
        last_offset = Some(e.offset());
        if e.is_trust_point() {
            if e.is_extended() || e.pcr() != crate::eventlog::Event::NO_PCR {
                violated(target, &format!("trust point {i} is extended or has a PCR"));
            }
        } else if e.pcr() >= PCR_COUNT || u32::from(e.pcr()) != e.pcr_index() {
            violated(target, &format!("event {i} PCR {} not below 24", e.pcr()));
        }
        let _ = e.decode();
        let _ = serde_json::to_vec(e);
    }
    for alg in log.replay().banks() {
        if !log.banks().contains(&alg) {
            violated(
                target,
                &format!("replayed bank {alg:?} the log does not declare"),
            );
        }
        for (_, d) in log.replay().bank(alg) {
            same(target, "replayed digest is of its bank", &alg, &d.alg());
        }
    }
    let _ = (
        log.findings(),
        log.spec_id(),
        log.startup_locality(),
        log.format(),
    );
}

/// One event of any type and content, framed as a one-event legacy log, so that the fuzzer
/// reaches the typed decoders (UEFI variables, device paths, load options...) without having
/// to build a log: `type (u32 LE) || data`. The data also goes to the device-path parser.
pub fn eventlog_decode(data: &[u8]) {
    let _ = DevicePathNode::parse(data);
    let mut r = Reader::new("fuzz", data);
    let Ok(event_type) = r.take(4, "type") else {
        return;
    };
    let body = r.rest();
    let Ok(size) = u32::try_from(body.len()) else {
        return;
    };
    let mut log = Vec::with_capacity(32 + body.len());
    log.extend_from_slice(&1u32.to_le_bytes());
    log.extend_from_slice(event_type);
    log.extend_from_slice(&[0u8; 20]);
    log.extend_from_slice(&size.to_le_bytes());
    log.extend_from_slice(body);
    if let Ok(parsed) = EventLog::parse(&log) {
        check_eventlog("eventlog_decode", &log, &parsed);
    }
}

/// IMA lists in both formats and both common template-hash banks: whatever is accepted
/// re-encodes to exactly the input (nothing skipped or normalised) and replays; an ASCII list
/// survives conversion to the binary format with the same template data.
pub fn ima(data: &[u8]) {
    const T: &str = "ima";
    for alg in [HashAlg::Sha1, HashAlg::Sha256] {
        if let Ok(list) = MeasurementList::parse_binary(data, alg) {
            same(
                T,
                "binary: to_binary(parse(x)) == x",
                &data,
                &list.to_binary().as_slice(),
            );
            let _ = (
                list.replay(HashAlg::Sha256),
                list.findings(),
                list.to_ascii(),
            );
        }
        if let Ok(list) = MeasurementList::parse_ascii(data, alg) {
            let mut canon = data.to_vec();
            if !canon.is_empty() && !canon.ends_with(b"\n") {
                canon.push(b'\n');
            }
            same(
                T,
                "ascii: to_ascii(parse(x)) == x",
                &canon,
                &list.to_ascii(),
            );
            let _ = (list.replay(HashAlg::Sha384), list.findings());
            let Ok(bin) = MeasurementList::parse_binary(&list.to_binary(), alg) else {
                violated(T, "ascii list does not parse back from its binary form");
            };
            same(
                T,
                "ascii -> binary entry count",
                &list.entries().len(),
                &bin.entries().len(),
            );
            for (a, b) in list.entries().iter().zip(bin.entries()) {
                same(
                    T,
                    "ascii -> binary template data",
                    &a.template_data(),
                    &b.template_data(),
                );
                same(
                    T,
                    "ascii -> binary template hash",
                    &a.template_hash(),
                    &b.template_hash(),
                );
            }
        }
    }
}

/// Decodes `data` as message `M`; a decoded message re-encodes and decodes to an equal one.
fn proto_message<M>(data: &[u8]) -> Option<M>
where
    M: serde::de::DeserializeOwned + serde::Serialize + v1::Validate + PartialEq + Debug,
{
    let msg = v1::decode::<M>(data).ok()?;
    let Ok(bytes) = v1::encode(&msg) else {
        violated(
            "proto",
            &format!("decoded message does not encode: {msg:?}"),
        );
    };
    match v1::decode::<M>(&bytes) {
        Ok(again) => same("proto", "decode(encode(m)) == m", &msg, &again),
        Err(e) => violated("proto", &format!("encoded message does not decode: {e}")),
    }
    Some(msg)
}

/// Protocol v1: every message type, and the conversions the server applies to a decoded
/// attest request.
pub fn proto(data: &[u8]) {
    let _ = proto_message::<v1::RegisterRequest>(data);
    let _ = proto_message::<v1::RegisterResponse>(data);
    let _ = proto_message::<v1::ActivateRequest>(data);
    let _ = proto_message::<v1::ActivateResponse>(data);
    let _ = proto_message::<v1::RegisterIakRequest>(data);
    let _ = proto_message::<v1::ChallengeRequest>(data);
    if let Some(c) = proto_message::<v1::ChallengeResponse>(data) {
        let _ = c.nonce();
    }
    if let Some(a) = proto_message::<v1::AttestRequest>(data) {
        let _ = (a.pcr_values(), a.nk_pub.to_keysplit());
        if let Some(ima) = &a.ima_log {
            let _ = ima.parse();
        }
        if let Ok(p) = a.inclusion.to_merkle() {
            let _ = merkle::root_from_proof(&[0u8; 32], &p);
        }
    }
    if let Some(r) = proto_message::<v1::AttestResponse>(data) {
        if let Ok(s) = r.sealed_half.to_keysplit() {
            same(
                "proto",
                "Sealed via keysplit",
                &r.sealed_half,
                &v1::Sealed::from_keysplit(&s),
            );
        }
        if let Some(p) = &r.payload {
            let _ = PayloadCiphertext::from_bytes(p.as_bytes());
        }
    }
    let _ = proto_message::<v1::ErrorResponse>(data);
    // Provider mode.
    if let Some(h) = proto_message::<v1::HostQuoteRequest>(data) {
        let _ = h.nonce();
    }
    if let Some(h) = proto_message::<v1::HostQuoteResponse>(data) {
        let _ = h.pcr_values();
    }
    let _ = proto_message::<v1::HostAkResponse>(data);
    // Auto-enrollment deposits (the server decodes the requests from strangers).
    let _ = proto_message::<v1::DepositNonceRequest>(data);
    let _ = proto_message::<v1::DepositNonceResponse>(data);
    if let Some(d) = proto_message::<v1::DepositRequest>(data) {
        let _ = (d.pcr_values(), d.deposit.digest(&[0u8; 32]));
    }
    let _ = proto_message::<v1::DepositResponse>(data);
    // Admin API and captured evidence (unlockctl reads these from servers and files).
    let _ = proto_message::<v1::EnrollRequest>(data);
    let _ = proto_message::<v1::EnrollmentInfo>(data);
    let _ = proto_message::<v1::EnrollmentList>(data);
    let _ = proto_message::<v1::IakBindRequest>(data);
    let _ = proto_message::<v1::IakBindResponse>(data);
    let _ = proto_message::<v1::PolicyCreateRequest>(data);
    let _ = proto_message::<v1::PolicyUpdateRequest>(data);
    let _ = proto_message::<v1::PolicyVersionInfo>(data);
    let _ = proto_message::<v1::PolicyList>(data);
    let _ = proto_message::<v1::PolicyDiffInfo>(data);
    let _ = proto_message::<v1::PolicyApplyRequest>(data);
    let _ = proto_message::<v1::PolicyApplyResponse>(data);
    let _ = proto_message::<v1::CapturedEvidence>(data);
}

/// The binary Merkle inclusion proof.
pub fn inclusion_proof(data: &[u8]) {
    const T: &str = "inclusion_proof";
    if let Ok(p) = InclusionProof::from_bytes(data) {
        same(
            T,
            "to_bytes(from_bytes(x)) == x",
            &data,
            &p.to_bytes().as_slice(),
        );
        if let Ok(root) = merkle::root_from_proof(&[7u8; 32], &p) {
            if merkle::verify_inclusion(&[7u8; 32], &p, &root).is_err() {
                violated(T, "a proof does not verify against the root it gives");
            }
        }
    }
}

/// The payload ciphertext and a wrapped share (both AEAD envelopes): bounded parse, exact
/// re-encoding, and decryption under a fixed key that must fail cleanly.
pub fn payload_ciphertext(data: &[u8]) {
    const T: &str = "payload_ciphertext";
    if let Ok(ct) = PayloadCiphertext::from_bytes(data) {
        same(T, "as_bytes(from_bytes(x)) == x", &data, &ct.as_bytes());
        let _ = keysplit::decrypt_payload(
            &keysplit::combine(&Share::from_bytes([7u8; 32]), &Share::from_bytes([0u8; 32])),
            "agent",
            &ct,
        );
    }
    let master = MasterKey::from_bytes([9u8; 32]);
    let _ = master.unwrap_share(data, &keysplit::wrap_context("verifier", "agent"));
}

/// A share sealed to NK (HPKE): bounded parse, exact re-encoding, agreement with the wire
/// type, and opening with an NK that must fail cleanly.
pub fn sealed(data: &[u8]) {
    const T: &str = "sealed";
    static NK: OnceLock<Option<NkPrivate>> = OnceLock::new();
    let _ = NkPublic::from_slice(data);
    if let Ok(s) = keysplit::Sealed::from_bytes(data) {
        same(
            T,
            "to_bytes(from_bytes(x)) == x",
            &data,
            &s.to_bytes().as_slice(),
        );
        let wire = v1::Sealed::from_keysplit(&s);
        if let Ok(back) = wire.to_keysplit() {
            same(T, "through the wire type", &s, &back);
        }
        if let Some(nk) = NK.get_or_init(|| NkPrivate::generate().ok()) {
            let _ = nk.open_share(&s, "verifier", b"challenge");
        }
    }
}

/// A challenge round's parameters as an attester receives them ([`crate::round::answer`]):
/// arbitrary bytes never panic and never open (they were not sealed to this attester); the
/// input's first 32 bytes as a nonce, the rest as the parameters.
pub fn challenge_params(data: &[u8]) {
    const T: &str = "challenge_params";
    static ATTESTER: OnceLock<Option<NkPrivate>> = OnceLock::new();
    let Some(attester) = ATTESTER.get_or_init(|| NkPrivate::generate().ok()) else {
        return;
    };
    let (nonce, params) = data.split_at(data.len().min(32));
    let mut n = [0u8; 32];
    n.iter_mut().zip(nonce).for_each(|(o, b)| *o = *b);
    let opened = crate::round::answer(attester, params, &n, b"quote").is_ok();
    same(T, "foreign parameters never open", &false, &opened);
    let check = crate::round::RoundKey::new(&[0; 32]).check(&n, b"quote", Some(params));
    same(
        T,
        "an arbitrary answer is never accepted",
        &false,
        &check.is_ok(),
    );
}

/// EK certificates: DER and PEM. A parsed certificate keeps its exact DER; chain building
/// with the input as its own anchor exercises signature and extension checks.
pub fn ekcert(data: &[u8]) {
    const T: &str = "ekcert";
    // A fixed time (2024-01-01) so that a crash reproduces whatever the clock says.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    if let Ok(c) = Certificate::from_der(data) {
        same(T, "der() == x", &data, &c.der());
        let _ = (c.tpm_info(), c.validity(), c.is_self_issued());
        let _ = c.subject_serial_number();
        let _ = ekcert::iak_identity(data).map(|id| id.key());
        let mut store = TrustStore::new();
        if store.add_der(data).is_err() {
            violated(T, "a parsed certificate is refused as an anchor");
        }
        let _ = store.verify_chain(data, &[], now);
        let _ = store.verify_chain(data, &[data], now);
    }
    if let Ok(ders) = ekcert::pem_certificates(data) {
        for der in &ders {
            let _ = Certificate::from_der(der);
        }
        let _ = TrustStore::new().add_pem(data);
    }
}

/// Policy documents (operator input through the admin API): a checked policy's document
/// serializes and parses back to an equal policy.
pub fn policy(data: &[u8]) {
    const T: &str = "policy";
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::from_json(text) {
        let Ok(json) = serde_json::to_string(p.document()) else {
            violated(T, "a policy document does not serialize");
        };
        same(
            T,
            "from_json(to_json(p)) == p",
            &Ok(p.clone()),
            &Policy::from_json(&json).map_err(|e| e.to_string()),
        );
        let _ = (p.selection(), p.release_pcr());
    }
}

/// PE images (kernels, shim, grub, systemd-boot) as `unlockctl policy allow` reads them:
/// the Authenticode digest, the signed digests and QEMU's setup-header patch never panic,
/// the digest is deterministic, and an image whose digest was computed keeps its length
/// under the patch.
pub fn authenticode(data: &[u8]) {
    const T: &str = "authenticode";
    let first = crate::predict::authenticode(data, HashAlg::Sha256);
    same(
        T,
        "authenticode is deterministic",
        &first,
        &crate::predict::authenticode(data, HashAlg::Sha256),
    );
    let _ = crate::predict::signed_digests(data);
    if let Ok(sigs) = crate::predict::image_signatures(data) {
        if sigs.len() > crate::predict::MAX_IMAGE_SIGNATURES {
            violated(T, "more signatures than the cap");
        }
    }
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if let Ok(img) = crate::predict::qemu_direct_boot_image(data, Some(len / 2 + 1), 768 << 20) {
        same(T, "patched image keeps its length", &data.len(), &img.len());
        let _ = crate::predict::authenticode(&img, HashAlg::Sha1);
    }
    uki(data);
}

/// The UKI reader over the same bytes: every section it returns is a non-empty piece of
/// the input, `.linux` first, and the stub's events are two per section.
fn uki(data: &[u8]) {
    const T: &str = "authenticode/uki";
    let Ok(sections) = crate::predict::uki::sections(data) else {
        return;
    };
    same(
        T,
        ".linux first",
        &sections.first().map(|s| s.name),
        &Some(".linux"),
    );
    for s in &sections {
        let (all, part) = (data.as_ptr_range(), s.data.as_ptr_range());
        let inside = all.start <= part.start && part.end <= all.end;
        same(
            T,
            "a section is a piece of the image",
            &true,
            &(inside && !s.data.is_empty()),
        );
    }
    let events = crate::predict::uki::pcr11_events(&sections, HashAlg::Sha256);
    same(
        T,
        "two events per section",
        &(2 * sections.len()),
        &events.len(),
    );
    let files = crate::predict::BootFiles {
        kernel: data,
        initrd: None,
        cmdline: None,
        efi_apps: &[],
    };
    if let Ok(p) = crate::predict::predict(&files, crate::predict::BootPath::Uki, HashAlg::Sha256) {
        same(T, "PCR 11 events predicted", &events, &p.pcr11_events);
    }
}

/// A boot application's Authenticode signature as a machine sends it (`image_signature`):
/// verified for the image digest it carries itself (so the checks past the digest
/// comparison run) and for a fixed one, against Debian's Secure Boot CA. Must refuse or accept, never panic;
/// an accepted signature must vouch for exactly the digest asked for.
pub fn image_signature(data: &[u8]) {
    use crate::image_signature::{verify, TrustedSigners};
    const T: &str = "image_signature";
    const DEBIAN_CA: &[u8] = include_bytes!("image_signature/testdata/debian-secure-boot-ca.der");
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_811_808_000);
    let fixed = HashAlg::Sha256.hash(b"fixed");
    let carried = authenticode::AuthenticodeSignature::from_bytes(data)
        .ok()
        .and_then(|s| crate::wire::Digest::from_slice(HashAlg::Sha256, s.digest()));
    let Ok(debian) = TrustedSigners::from_der(&[DEBIAN_CA.to_vec()]) else {
        violated(T, "the Debian CA does not load");
    };
    for digest in [Some(fixed), carried].into_iter().flatten() {
        if let Ok(v) = verify(data, &digest, &debian, now) {
            same(T, "vouches for the digest asked for", &v.digest, &digest);
        }
    }
}

/// TPM responses as the agent decodes them (`crate::tpm2`): byte 0 picks the command (its
/// response layout), bit 0 of byte 1 whether the command had sessions, the rest is the
/// response. Decoding must return an error or a value, never panic or allocate unboundedly.
pub fn tpm_response(data: &[u8]) {
    let Some(([which, flags], bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let codes = &crate::tpm2::ALL_CODES;
    let Some(code) = codes.get(usize::from(*which) % codes.len()) else {
        return;
    };
    crate::tpm2::fuzz_decode(*code, flags & 1 == 1, bytes);
    // The EK chain NV contents splitter: what it returns is the input, cut in pieces.
    if let Some(parts) = crate::tpm2::split_der_values(bytes) {
        if parts.concat() != bytes {
            violated("tpm_response", "split_der_values lost or invented bytes");
        }
    }
}

/// The genuine report [`fuzz_vcek`] signed (virtee/sev's Milan report, see the attester's test
/// data README): seeded into the `snp_report` corpus, so the fuzzer mutates a report that
/// verifies and must never find another signed part that does.
const FUZZ_GENUINE_REPORT: &[u8] = include_bytes!("attester/testdata/snp-report-milan-virtee.bin");

/// A real VCEK, verified once: the one that signed [`FUZZ_GENUINE_REPORT`] and no other input.
fn fuzz_vcek() -> &'static crate::attester::amd::VerifiedVcek {
    static VCEK: OnceLock<crate::attester::amd::VerifiedVcek> = OnceLock::new();
    VCEK.get_or_init(|| {
        let Ok(roots) = crate::attester::amd::AmdRoots::shipped() else {
            violated("snp_report", "the shipped AMD roots do not load");
        };
        // 2025-06-15, inside the certificate's validity.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        match roots.verify_vcek(
            include_bytes!("attester/testdata/vcek-milan-other-chip.der"),
            &[],
            now,
        ) {
            Ok(v) => v,
            Err(e) => violated("snp_report", &format!("the fuzz VCEK is refused: {e}")),
        }
    })
}

/// SEV-SNP attestation reports: a parse succeeds only on exactly 1184 bytes, and an input
/// verifies with the real VCEK only if its signed part is the genuine report's (the unsigned
/// bytes after the signature are not covered, and an ECDSA signature may have more than one
/// encoding).
pub fn snp_report(data: &[u8]) {
    const T: &str = "snp_report";
    use crate::attester::snp;
    if let Ok(r) = snp::SnpReport::parse(data) {
        if data.len() != snp::REPORT_LEN {
            violated(T, "a report of the wrong size parsed");
        }
        let _ = (r.debug_allowed(), r.signing_key(), r.smt_enabled());
    }
    if snp::verify_report(data, fuzz_vcek()).is_ok()
        && data.get(..snp::SIGNED_LEN) != FUZZ_GENUINE_REPORT.get(..snp::SIGNED_LEN)
    {
        violated(
            T,
            "a report with a forged signed part verified with a real VCEK",
        );
    }
}

/// Azure HCL reports: parsing is bounded, the runtime data lies inside the input, and no
/// input verifies with a VCEK that did not sign its report.
pub fn hcl_report(data: &[u8]) {
    const T: &str = "hcl_report";
    use crate::attester::azure;
    if let Ok(h) = azure::HclReport::parse(data) {
        if h.runtime_data.len() > data.len() || h.hw_report.len() != 1184 {
            violated(T, "parsed slices larger than the input");
        }
        let _ = (h.report_data(), h.runtime_data_bound());
    }
    if azure::verify_hcl_report(data, fuzz_vcek()).is_ok() {
        violated(T, "a fuzzed HCL report verified with a real VCEK");
    }
    // The same bytes as a capture (JSON around the parsers above): must not panic. (A real
    // capture does verify, so there is no invariant on the outcome.)
    static ROOTS: OnceLock<Option<crate::attester::amd::AmdRoots>> = OnceLock::new();
    if let Some(roots) = ROOTS.get_or_init(|| crate::attester::amd::AmdRoots::shipped().ok()) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let _ = crate::attester::capture::CheckedAzureCapture::check(data, roots, now);
    }
}
