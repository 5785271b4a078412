//! IMA lists from the shared test data: every file parses (or fails with the exact error
//! its defect calls for), template hashes recompute, replays match values computed
//! independently (Python hashlib over the raw files), and both formats round-trip.
// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use verifier_core::ima::{
    EntryProblem, FileDigestAlg, ImaError, ImaFinding, Location, MeasurementList, TemplateKind,
};
use verifier_core::wire::{Digest, HashAlg};
use verifier_core::ParseError;

fn testdata() -> PathBuf {
    let dir = std::env::var("UNLOCK_TESTDATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata").into());
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("ima").is_dir(),
        "test data not found at {} (set UNLOCK_TESTDATA)",
        dir.display()
    );
    dir
}

fn read(rel: &str) -> Vec<u8> {
    let p = testdata().join("ima").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn hex_digest(alg: HashAlg, s: &str) -> Digest {
    Digest::from_hex(alg, s).unwrap()
}

#[test]
fn every_file_is_covered() {
    // Fails when a file is added to the test data without a test here.
    let mut names = Vec::new();
    for sub in ["keylime", "rust-keylime", "tpm2-tss"] {
        for e in std::fs::read_dir(testdata().join("ima").join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if !name.ends_with(".keylime-policy.json") {
                names.push(format!("{sub}/{name}"));
            }
        }
    }
    names.sort();
    let covered = [
        "keylime/ima-log-sha1.txt",
        "keylime/ima-log-sha256.txt",
        "keylime/ima-log-sha384.txt",
        "keylime/ima-log-sha512.txt",
        "keylime/ima-log-sm3_256.txt",
        "keylime/ima-log-unknown.txt",
        "rust-keylime/ascii_runtime_measurements",
        "rust-keylime/ima_log.txt",
        "rust-keylime/invalid_ima_log.txt",
        "tpm2-tss/sml-ima-ng-sha1-invalidated.bin",
        "tpm2-tss/sml-ima-ng-sha1.bin",
        "tpm2-tss/sml-ima-sha1-invalidated.bin",
        "tpm2-tss/sml-ima-sha1.bin",
        "tpm2-tss/sml-ima-sig-sha256-invalidated.bin",
        "tpm2-tss/sml-ima-sig-sha256.bin",
    ];
    assert_eq!(names, covered);
}

#[test]
fn rust_keylime_ascii_list_replays_and_round_trips() {
    let input = read("rust-keylime/ascii_runtime_measurements");
    let list = MeasurementList::parse_ascii(&input, HashAlg::Sha1).unwrap();
    assert_eq!(list.entries().len(), 826);
    let first = &list.entries()[0];
    assert_eq!(first.path(), b"boot_aggregate");
    assert_eq!(first.kind(), TemplateKind::ImaNg);
    assert!(list
        .entries()
        .iter()
        .all(|e| e.pcr() == 10 && !e.is_violation()));
    assert_eq!(list.entries()[1].path_lossy(), "/init");
    assert_eq!(
        list.entries()[1].file_digest().digest(),
        Some(hex_digest(
            HashAlg::Sha1,
            "19f13b42c2745066347e76454788c0fe083643f3"
        ))
    );

    // Every template hash is the SHA-1 of the rebuilt template data.
    assert_eq!(list.findings(), vec![]);

    // Expected values: Python hashlib fold over the file (SHA-1: logged hashes; SHA-256:
    // sha256 of the ima-ng template data).
    let sha1 = list.replay(HashAlg::Sha1);
    assert_eq!(sha1.findings, vec![]);
    assert_eq!(
        sha1.pcr(HashAlg::Sha1, 10),
        Some(&hex_digest(
            HashAlg::Sha1,
            "82231c67a69da98dc5b3aa10f6343d33109225fc"
        ))
    );
    assert_eq!(sha1.pcrs.iter().count(), 1);
    let sha256 = list.replay(HashAlg::Sha256);
    assert_eq!(
        sha256.pcr(HashAlg::Sha256, 10),
        Some(&hex_digest(
            HashAlg::Sha256,
            "c4a065637fc6a7c55f2811dd06cb45dd037133be2b3dc5c3e6fbe6bf061db724"
        ))
    );

    assert_eq!(list.to_ascii(), input);
    let again = MeasurementList::parse_binary(&list.to_binary(), HashAlg::Sha1).unwrap();
    assert_eq!(again.to_ascii(), input);
    assert_eq!(again.replay(HashAlg::Sha1), sha1);
}

#[test]
fn rust_keylime_single_entry() {
    let list =
        MeasurementList::parse_ascii(&read("rust-keylime/ima_log.txt"), HashAlg::Sha1).unwrap();
    assert_eq!(list.entries().len(), 1);
    let e = &list.entries()[0];
    assert_eq!(e.file_digest().alg(), &FileDigestAlg::Hash(HashAlg::Sha256));
    assert_eq!(
        e.file_digest().to_hex(),
        "fec395eacfbd4d9bfd3ddce68ccf0792159494ff7aae89c556f7f2796046f871"
    );
    assert_eq!(list.findings(), vec![]);
}

#[test]
fn invalid_list_is_a_clean_error() {
    let err =
        MeasurementList::parse_ascii(&read("rust-keylime/invalid_ima_log.txt"), HashAlg::Sha1)
            .unwrap_err();
    assert_eq!(
        err,
        ImaError::Ascii {
            line: 1,
            offset: 0,
            problem: EntryProblem::MissingField("template-hash"),
        }
    );
    assert!(err.to_string().contains("line 1"), "{err}");
}

/// The keylime `create-runtime-policy` inputs. Their boot_aggregate entries carry an all-zero
/// template hash (a violation) except in the sha256 file. The `.keylime-policy.json` files
/// next to them describe other files (`/base_policy_data`, `/rootfs_data`), not these lists,
/// so the path/digest values below are checked against the list text instead.
#[test]
fn keylime_lists_with_each_file_digest_algorithm() {
    let cases = [
        ("sha1", HashAlg::Sha1, "009b0d8ee8fb8d890fa70f9c8e02b3f1eded1509", true),
        (
            "sha256",
            HashAlg::Sha256,
            "96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754",
            false,
        ),
        (
            "sha384",
            HashAlg::Sha384,
            "20393b3e109c55b3128ba761bab1c555d8f39afe118eb1a29929ba8e017e8b2cdfc805c304e10d280604a829145ba6f0",
            true,
        ),
        (
            "sha512",
            HashAlg::Sha512,
            "4fb914b8ed30ff69c65551573ce096aaf0c3507896cce44868d7a7e553891043c68a3889f3fc8056ef8c6bc3a54a9db83cd8112928ad51c5cd9e1a4ef332de53",
            true,
        ),
    ];
    for (name, alg, data_digest, boot_violation) in cases {
        let list = MeasurementList::parse_ascii(
            &read(&format!("keylime/ima-log-{name}.txt")),
            HashAlg::Sha1,
        )
        .unwrap();
        let [boot, data] = list.entries() else {
            panic!("{name}: expected two entries");
        };
        assert_eq!(boot.path(), b"boot_aggregate");
        assert_eq!(boot.is_violation(), boot_violation, "{name}");
        assert_eq!(data.path(), b"/data");
        assert_eq!(data.file_digest().alg(), &FileDigestAlg::Hash(alg));
        assert_eq!(data.file_digest().to_hex(), data_digest);
        assert_eq!(list.findings(), vec![], "{name}");
    }
}

/// These two are synthetic: 32-byte template hashes (as in `*_runtime_measurements_sha256`)
/// that are not the SHA-256 of the template data, and file digest algorithms we cannot
/// compute. They parse, keep the algorithm by name, and the data entry is a finding.
#[test]
fn keylime_lists_with_other_algorithms() {
    for (name, alg, len) in [("sm3_256", "sm3_256", 32), ("unknown", "unknown", 29)] {
        let list = MeasurementList::parse_ascii(
            &read(&format!("keylime/ima-log-{name}.txt")),
            HashAlg::Sha256,
        )
        .unwrap();
        assert_eq!(list.entries().len(), 2);
        let data = &list.entries()[1];
        assert_eq!(data.file_digest().alg(), &FileDigestAlg::Other(alg.into()));
        assert_eq!(data.file_digest().alg().name(), alg);
        assert_eq!(data.file_digest().as_bytes().len(), len);
        assert_eq!(data.file_digest().digest(), None);
        let findings = list.findings();
        assert!(
            matches!(
                findings.as_slice(),
                [ImaFinding::TemplateHashMismatch {
                    index: 1,
                    location: Location::Line(2),
                    ..
                }]
            ),
            "{name}: {findings:?}"
        );
        // The same text read as a SHA-1 list is refused: the template hash length is wrong.
        let err = MeasurementList::parse_ascii(
            &read(&format!("keylime/ima-log-{name}.txt")),
            HashAlg::Sha1,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ImaError::Ascii {
                line: 1,
                problem: EntryProblem::FieldTooLarge {
                    field: "template-hash",
                    ..
                },
                ..
            }
        ));
    }
}

/// The tpm2-tss fixtures end with bytes that are not a whole entry (a stray newline from
/// their base64 source, or a cut-off entry). The error names the entry and offset; the
/// complete prefix then parses with every template hash matching.
#[test]
fn tpm2_tss_binary_lists() {
    let cases = [
        ("sml-ima-ng-sha1.bin", 6, 558, TemplateKind::ImaNg),
        ("sml-ima-sha1.bin", 12, 916, TemplateKind::Ima),
        ("sml-ima-sig-sha256.bin", 9, 987, TemplateKind::ImaSig),
    ];
    for (file, entries, offset, kind) in cases {
        let bytes = read(&format!("tpm2-tss/{file}"));
        let err = MeasurementList::parse_binary(&bytes, HashAlg::Sha1).unwrap_err();
        match err {
            ImaError::Binary {
                index,
                offset: at,
                problem: EntryProblem::Structure(ParseError::Truncated { .. }),
            } => {
                assert_eq!((index, at), (entries, offset), "{file}");
            }
            other => panic!("{file}: unexpected {other:?}"),
        }
        let prefix = &bytes[..offset];
        let list = MeasurementList::parse_binary(prefix, HashAlg::Sha1).unwrap();
        assert_eq!(list.entries().len(), entries);
        assert!(list.entries().iter().all(|e| e.kind() == kind));
        assert_eq!(list.findings(), vec![], "{file}");
        assert_eq!(list.entries()[0].path(), b"boot_aggregate");
        assert_eq!(list.entries()[1].path(), b"/init");
        assert_eq!(list.to_binary(), prefix, "{file}");
        // Through the ASCII format and back: same template data, same hashes.
        let ascii = MeasurementList::parse_ascii(&list.to_ascii(), HashAlg::Sha1).unwrap();
        assert_eq!(ascii.findings(), vec![]);
        for (a, b) in ascii.entries().iter().zip(list.entries()) {
            assert_eq!(a.template_data(), b.template_data());
            assert_eq!(a.template_hash(), b.template_hash());
        }
    }
}

#[test]
fn tpm2_tss_templates_agree_on_file_digests() {
    // The ima and ima-ng fixtures measured the same files: the SHA-1 digests must agree.
    let ng = read("tpm2-tss/sml-ima-ng-sha1.bin");
    let ng = MeasurementList::parse_binary(&ng[..558], HashAlg::Sha1).unwrap();
    let ima = read("tpm2-tss/sml-ima-sha1.bin");
    let ima = MeasurementList::parse_binary(&ima[..916], HashAlg::Sha1).unwrap();
    for (a, b) in ng.entries().iter().zip(ima.entries()) {
        assert_eq!(a.path(), b.path());
        assert_eq!(a.file_digest(), b.file_digest());
    }
    let sha1 = ng.replay(HashAlg::Sha1);
    assert_eq!(
        sha1.pcr(HashAlg::Sha1, 10),
        Some(&hex_digest(
            HashAlg::Sha1,
            "ef2a20de2a84a4780f92ab11d5c4934c709dff00"
        ))
    );
    let sha256 = ng.replay(HashAlg::Sha256);
    assert_eq!(
        sha256.pcr(HashAlg::Sha256, 10),
        Some(&hex_digest(
            HashAlg::Sha256,
            "700a1bb47bc2bc005f2d8e23d80e2a1e301733c1d29023c52d1d7d149719eb64"
        ))
    );
}

#[test]
fn invalidated_entries_extend_all_ones() {
    // This fixture is one byte short: its n-ng field claims 15 bytes ("boot_aggregate\0")
    // and the file ends before the NUL. The error says so; with the NUL restored it parses.
    let mut bytes = read("tpm2-tss/sml-ima-ng-sha1-invalidated.bin");
    let err = MeasurementList::parse_binary(&bytes, HashAlg::Sha1).unwrap_err();
    assert_eq!(
        err,
        ImaError::Binary {
            index: 0,
            offset: 0,
            problem: EntryProblem::Structure(ParseError::Truncated {
                structure: "IMA entry",
                field: "IMA template data",
                offset: 38,
                needed: 1
            })
        }
    );
    bytes.push(0);
    let ng = MeasurementList::parse_binary(&bytes, HashAlg::Sha1).unwrap();
    let [e] = ng.entries() else {
        panic!("one entry")
    };
    assert!(e.is_violation());
    assert_eq!(e.pcr(), 13);
    assert_eq!(e.path(), b"boot_aggregate");
    let r = ng.replay(HashAlg::Sha1);
    assert_eq!(r.findings, vec![]);
    assert_eq!(
        r.pcr(HashAlg::Sha1, 13),
        Some(&hex_digest(
            HashAlg::Sha1,
            "bac37b84f007d0238af95af707cac8d61254870e"
        ))
    );
    assert_eq!(r.pcr(HashAlg::Sha1, 10), None);
    assert_eq!(ng.to_binary(), bytes);

    let ima = MeasurementList::parse_binary(
        &read("tpm2-tss/sml-ima-sha1-invalidated.bin"),
        HashAlg::Sha1,
    )
    .unwrap();
    let [e] = ima.entries() else {
        panic!("one entry")
    };
    assert!(e.is_violation());
    assert_eq!(e.kind(), TemplateKind::Ima);

    let sig = MeasurementList::parse_binary(
        &read("tpm2-tss/sml-ima-sig-sha256-invalidated.bin"),
        HashAlg::Sha1,
    )
    .unwrap();
    let [boot, init] = sig.entries() else {
        panic!("two entries")
    };
    assert!(!boot.is_violation());
    assert!(init.is_violation());
    assert_eq!(init.signature(), None);
    assert_eq!(
        init.file_digest().alg(),
        &FileDigestAlg::Hash(HashAlg::Sha256)
    );
    let r1 = sig.replay(HashAlg::Sha1);
    assert_eq!(r1.findings, vec![]);
    assert_eq!(
        r1.pcr(HashAlg::Sha1, 10),
        Some(&hex_digest(
            HashAlg::Sha1,
            "a0e7bc9af0a2b54147b0d595d058f15c6cc44a6d"
        ))
    );
    assert_eq!(
        sig.replay(HashAlg::Sha256).pcr(HashAlg::Sha256, 10),
        Some(&hex_digest(
            HashAlg::Sha256,
            "338c5ec5cba3d64a886cc6f369f10e5209bf8f49db078635723bb1ed8091b2ba"
        ))
    );
}
