//! Attacks on IMA lists: each forges one thing and checks it is refused or reported, plus a
//! deterministic mutation loop that must never panic.
// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use verifier_core::ima::{
    EntryProblem, ImaError, ImaFinding, Location, MeasurementList, MAX_LIST_BYTES,
};
use verifier_core::wire::HashAlg;
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

fn ascii_list() -> Vec<u8> {
    read("rust-keylime/ascii_runtime_measurements")
}

/// The complete entries of the tpm2-tss ima-ng fixture (its last byte is a stray newline).
fn binary_ng() -> Vec<u8> {
    read("tpm2-tss/sml-ima-ng-sha1.bin")[..558].to_vec()
}

/// Replaces the first occurrence of `from` in line `line` (1-based).
fn edit_line(input: &[u8], line: usize, from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(input.to_vec()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let l = &mut lines[line - 1];
    assert!(l.contains(from), "line {line} lacks {from}");
    *l = l.replacen(from, to, 1);
    (lines.join("\n") + "\n").into_bytes()
}

fn single_mismatch(list: &MeasurementList, index: usize, location: Location) {
    let findings = list.findings();
    assert!(
        matches!(
            findings.as_slice(),
            [ImaFinding::TemplateHashMismatch { index: i, location: l, logged, computed }]
                if *i == index && *l == location && logged != computed
        ),
        "{findings:?}"
    );
}

#[test]
fn edited_template_hash_is_a_finding_and_changes_the_replay() {
    let good = MeasurementList::parse_ascii(&ascii_list(), HashAlg::Sha1).unwrap();
    let forged = edit_line(
        &ascii_list(),
        5,
        "753fcbc39d3234266cae396bebb3b6e5b0974f36",
        "753fcbc39d3234266cae396bebb3b6e5b0974f37",
    );
    let forged = MeasurementList::parse_ascii(&forged, HashAlg::Sha1).unwrap();
    single_mismatch(&forged, 4, Location::Line(5));
    assert_ne!(
        forged.replay(HashAlg::Sha1).pcrs,
        good.replay(HashAlg::Sha1).pcrs
    );
}

#[test]
fn edited_file_digest_is_a_finding() {
    // The attacker keeps the logged template hash (so the SHA-1 replay still matches the TPM)
    // and swaps the file digest a policy would check.
    let good = MeasurementList::parse_ascii(&ascii_list(), HashAlg::Sha1).unwrap();
    let forged = edit_line(
        &ascii_list(),
        2,
        "sha1:19f13b42c2745066347e76454788c0fe083643f3",
        "sha1:29f13b42c2745066347e76454788c0fe083643f3",
    );
    let forged = MeasurementList::parse_ascii(&forged, HashAlg::Sha1).unwrap();
    single_mismatch(&forged, 1, Location::Line(2));
    let replay = forged.replay(HashAlg::Sha1);
    assert_eq!(replay.pcrs, good.replay(HashAlg::Sha1).pcrs);
    assert_eq!(replay.findings.len(), 1);
    // A bank replayed from template data no longer matches either.
    assert_ne!(
        forged.replay(HashAlg::Sha256).pcrs,
        good.replay(HashAlg::Sha256).pcrs
    );
}

#[test]
fn edited_path_is_a_finding() {
    let forged = edit_line(&ascii_list(), 3, "/bin/sh", "/bin/zh");
    let forged = MeasurementList::parse_ascii(&forged, HashAlg::Sha1).unwrap();
    single_mismatch(&forged, 2, Location::Line(3));
}

#[test]
fn edited_binary_template_data_is_a_finding() {
    let mut bytes = binary_ng();
    // A byte of entry 1's file digest ("/init"; the entry starts at offset 87).
    let pos = bytes.windows(5).position(|w| w == b"/init").unwrap() - 9;
    bytes[pos] ^= 1;
    let forged = MeasurementList::parse_binary(&bytes, HashAlg::Sha1).unwrap();
    single_mismatch(&forged, 1, Location::Offset(87));
}

#[test]
fn forged_violation_changes_the_replay() {
    // Zeroing a template hash hides the entry's data from the check, but the PCR was
    // extended with the real hash, so the replay no longer matches the quote.
    let good = MeasurementList::parse_ascii(&ascii_list(), HashAlg::Sha1).unwrap();
    let forged = edit_line(
        &ascii_list(),
        2,
        "c156ebdcbfcd28fe1060ef4cdec0aab04d3a9b63",
        "0000000000000000000000000000000000000000",
    );
    let forged = MeasurementList::parse_ascii(&forged, HashAlg::Sha1).unwrap();
    assert!(forged.entries()[1].is_violation());
    assert_eq!(forged.findings(), vec![]);
    assert_ne!(
        forged.replay(HashAlg::Sha1).pcrs,
        good.replay(HashAlg::Sha1).pcrs
    );
}

fn ascii_err(text: &str) -> ImaError {
    MeasurementList::parse_ascii(text.as_bytes(), HashAlg::Sha1).unwrap_err()
}

fn ascii_problem(text: &str) -> EntryProblem {
    match ascii_err(text) {
        ImaError::Ascii { problem, .. } => problem,
        other => panic!("unexpected {other:?}"),
    }
}

const LINE: &str = "10 c156ebdcbfcd28fe1060ef4cdec0aab04d3a9b63 ima-ng sha1:19f13b42c2745066347e76454788c0fe083643f3 /init";

#[test]
fn malformed_ascii_lines_are_refused() {
    let ok = MeasurementList::parse_ascii(LINE.as_bytes(), HashAlg::Sha1).unwrap();
    assert_eq!(ok.findings(), vec![]);
    let cases = [
        (LINE.replacen("10 ", "24 ", 1), EntryProblem::BadPcr),
        (LINE.replacen("10 ", "010 ", 1), EntryProblem::BadPcr),
        (LINE.replacen("10 ", "-1 ", 1), EntryProblem::BadPcr),
        (LINE.replacen("ima-ng", "ima-ngv2", 1), EntryProblem::UnknownTemplate),
        (LINE.replacen("c156eb", "C156EB", 1), EntryProblem::BadHex("template-hash")),
        (LINE.replacen("sha1:19f1", "sha1:19F1", 1), EntryProblem::BadHex("d-ng")),
        (LINE.replacen("sha1:19f1", "sha1:9f1", 1), EntryProblem::BadHex("d-ng")),
        (
            LINE.replacen("sha1:19f1", "sha1:", 1),
            EntryProblem::FileDigestLength { len: 18, expected: 20 },
        ),
        (LINE.replacen("sha1:", "SHA1:", 1), EntryProblem::BadDigestField),
        (LINE.replacen("sha1:", "sha1", 1), EntryProblem::BadDigestField),
        (
            LINE.replacen("c156ebdc", "c156eb", 1),
            EntryProblem::TemplateHashLength {
                len: 19,
                expected: 20,
                alg: HashAlg::Sha1,
            },
        ),
        (LINE.replacen(" /init", "", 1), EntryProblem::MissingField("n-ng")),
        (LINE.replacen("/init", "/in\0it", 1), EntryProblem::EmbeddedNul("n-ng")),
        ("".to_owned() + "\n", EntryProblem::EmptyLine),
        (
            "10 c156ebdcbfcd28fe1060ef4cdec0aab04d3a9b63 ima-sig sha1:19f13b42c2745066347e76454788c0fe083643f3"
                .to_owned(),
            EntryProblem::MissingField("n-ng"),
        ),
        (
            "10 c156ebdcbfcd28fe1060ef4cdec0aab04d3a9b63 ima-sig sha1:19f13b42c2745066347e76454788c0fe083643f3 /init zz"
                .to_owned(),
            EntryProblem::BadHex("sig"),
        ),
    ];
    for (text, problem) in cases {
        assert_eq!(ascii_problem(&text), problem, "{text:?}");
    }
    // The error names the line and its offset.
    let text = format!("{LINE}\n{LINE}\n{}\n", LINE.replacen("10 ", "99 ", 1));
    assert_eq!(
        ascii_err(&text),
        ImaError::Ascii {
            line: 3,
            offset: 2 * (LINE.len() + 1),
            problem: EntryProblem::BadPcr
        }
    );
}

#[test]
fn ima_sig_names_with_spaces_and_signatures() {
    // The name may hold spaces; the signature is after the last space (empty when absent).
    let data = "sha256:fb8af866a4b8ae7cd7de1ddf4a9bf10a9d1c18dd3a66b5ba1a9a8eb09b7d0c4c";
    for (name, sig) in [("/a b/c d", "030204"), ("/plain", "")] {
        // Template hash computed by the parser itself, then checked by re-parsing.
        let line = format!("10 {} ima-sig {data} {name} {sig}", "00".repeat(19) + "01");
        let list = MeasurementList::parse_ascii(line.as_bytes(), HashAlg::Sha1).unwrap();
        let e = &list.entries()[0];
        assert_eq!(e.path(), name.as_bytes());
        assert_eq!(
            e.signature().map(hex::encode),
            (!sig.is_empty()).then(|| sig.into())
        );
        assert_eq!(list.to_ascii(), format!("{line}\n").into_bytes());
        assert_eq!(
            list.findings().len(),
            1,
            "the made-up template hash is reported"
        );
    }
}

fn entry_header(template: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&10u32.to_le_bytes());
    b.extend_from_slice(&[0x11; 20]);
    b.extend_from_slice(&u32::try_from(template.len()).unwrap().to_le_bytes());
    b.extend_from_slice(template);
    b
}

fn binary_problem(bytes: &[u8]) -> EntryProblem {
    match MeasurementList::parse_binary(bytes, HashAlg::Sha1).unwrap_err() {
        ImaError::Binary { problem, .. } => problem,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn binary_length_lies_are_typed_errors() {
    // Template data length far beyond the bound: refused before anything is taken.
    let mut b = entry_header(b"ima-ng");
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        binary_problem(&b),
        EntryProblem::FieldTooLarge {
            field: "template data",
            ..
        }
    ));
    // Template data length larger than what remains.
    let mut b = entry_header(b"ima-ng");
    b.extend_from_slice(&100u32.to_le_bytes());
    b.extend_from_slice(&[0; 10]);
    assert!(matches!(
        binary_problem(&b),
        EntryProblem::Structure(ParseError::Truncated { needed: 90, .. })
    ));
    // Template name length lie.
    let mut b = entry_header(b"");
    b.truncate(b.len() - 4);
    b.extend_from_slice(&0x1000u32.to_le_bytes());
    assert!(matches!(
        binary_problem(&b),
        EntryProblem::Structure(ParseError::TooLarge {
            field: "template_name",
            ..
        })
    ));
    // A field length inside the template data that overruns it.
    let mut b = entry_header(b"ima-ng");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&20u32.to_le_bytes());
    b.extend_from_slice(b"sha1");
    assert!(matches!(
        binary_problem(&b),
        EntryProblem::Structure(ParseError::Truncated { field: "field", .. })
    ));
    // Too many fields for the template.
    let good = binary_ng();
    let list = MeasurementList::parse_binary(&good, HashAlg::Sha1).unwrap();
    let e = &list.entries()[1];
    let mut data = e.template_data().to_vec();
    data.extend_from_slice(&0u32.to_le_bytes());
    let mut b = entry_header(b"ima-ng");
    b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    b.extend_from_slice(&data);
    assert_eq!(
        binary_problem(&b),
        EntryProblem::FieldCount {
            found: 3,
            expected: 2
        }
    );
    // ima-sig with only two fields.
    let mut b = entry_header(b"ima-sig");
    b.extend_from_slice(
        &u32::try_from(e.template_data().len())
            .unwrap()
            .to_le_bytes(),
    );
    b.extend_from_slice(e.template_data());
    assert_eq!(
        binary_problem(&b),
        EntryProblem::FieldCount {
            found: 2,
            expected: 3
        }
    );
    // PCR out of range, unknown template.
    let mut b = good.clone();
    b[0] = 24;
    assert_eq!(binary_problem(&b), EntryProblem::BadPcr);
    let mut b = good.clone();
    b[28] = b'X';
    assert_eq!(binary_problem(&b), EntryProblem::UnknownTemplate);
    // The ima template's name is bounded by 255 bytes.
    let mut b = entry_header(b"ima");
    b.extend_from_slice(&[0; 20]);
    b.extend_from_slice(&256u32.to_le_bytes());
    b.extend_from_slice(&[b'a'; 256]);
    assert!(matches!(
        binary_problem(&b),
        EntryProblem::Structure(ParseError::TooLarge {
            field: "n",
            max: 255,
            ..
        })
    ));
}

#[test]
fn errors_name_the_entry_index_and_offset() {
    let mut b = binary_ng();
    let second = 87; // entry 0 (boot_aggregate) is 87 bytes.
    b[second] = 99;
    assert_eq!(
        MeasurementList::parse_binary(&b, HashAlg::Sha1).unwrap_err(),
        ImaError::Binary {
            index: 1,
            offset: second,
            problem: EntryProblem::BadPcr
        }
    );
}

#[test]
fn oversize_lists_are_refused() {
    let big = vec![b'1'; MAX_LIST_BYTES + 1];
    let want = ImaError::ListTooLarge {
        len: MAX_LIST_BYTES + 1,
        max: MAX_LIST_BYTES,
    };
    assert_eq!(
        MeasurementList::parse_ascii(&big, HashAlg::Sha1).unwrap_err(),
        want
    );
    assert_eq!(
        MeasurementList::parse_binary(&big, HashAlg::Sha1).unwrap_err(),
        want
    );
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(b.len());
        match rng.below(5) {
            0 => b.truncate(at),
            1 => b.insert(at, rng.next().to_le_bytes()[0]),
            2 if at < b.len() => b[at] = rng.next().to_le_bytes()[0],
            3 if at < b.len() => b[at] = [b' ', b'\n', b'0', 0, 0xff][rng.below(5)],
            _ if at < b.len() => {
                b.remove(at);
            }
            _ => {}
        }
    }
    b
}

/// Mutated lists never panic; whatever is accepted re-encodes to exactly the input (so
/// nothing was silently skipped or normalised) and replays.
#[test]
fn mutation_loop_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds_ascii = [
        ascii_list()[..2000].to_vec(),
        read("keylime/ima-log-sha256.txt"),
        read("keylime/ima-log-unknown.txt"),
    ];
    let seeds_binary = [
        binary_ng(),
        read("tpm2-tss/sml-ima-sha1.bin")[..916].to_vec(),
        read("tpm2-tss/sml-ima-sig-sha256-invalidated.bin"),
    ];
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..3000 {
        let seed = &seeds_ascii[i % 3];
        let alg = if i % 3 == 2 {
            HashAlg::Sha256
        } else {
            HashAlg::Sha1
        };
        let input = mutate(&mut rng, seed);
        match MeasurementList::parse_ascii(&input, alg) {
            Ok(list) => {
                accepted += 1;
                let mut canon = input.clone();
                if !canon.is_empty() && !canon.ends_with(b"\n") {
                    canon.push(b'\n');
                }
                assert_eq!(list.to_ascii(), canon, "ascii case {i}");
                let _ = list.replay(HashAlg::Sha256);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
        let input = mutate(&mut rng, &seeds_binary[i % 3]);
        match MeasurementList::parse_binary(&input, HashAlg::Sha1) {
            Ok(list) => {
                accepted += 1;
                assert_eq!(list.to_binary(), input, "binary case {i}");
                let _ = list.replay(HashAlg::Sha384);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}
