//! Marshalling of the quote structures: round trips and bounded, field-naming errors.

// Test helpers outside #[test] functions are test code too (clippy.toml allows these in tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use verifier_core::wire::{
    Attest, Attested, BankSelection, ClockInfo, HashAlg, PcrSelection, PcrValues, Writer,
    TPM_GENERATED_VALUE,
};
use verifier_core::ParseError;

fn selection_bytes(banks: &[(u16, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(banks.len() as u32);
    for (alg, sel) in banks {
        w.u16(*alg).u8(sel.len() as u8).bytes(sel);
    }
    w.into_vec()
}

#[test]
fn pcr_selection_round_trip_and_order() {
    let b = selection_bytes(&[(0x000b, &[0x81, 0x00, 0x40]), (0x0004, &[0x01, 0, 0, 0])]);
    let s = PcrSelection::parse(&b).unwrap();
    assert_eq!(s.marshal(), b, "sizeofSelect 4 is kept as is");
    assert_eq!(
        s.iter().collect::<Vec<_>>(),
        [
            (HashAlg::Sha256, 0),
            (HashAlg::Sha256, 7),
            (HashAlg::Sha256, 22),
            (HashAlg::Sha1, 0)
        ]
    );
    let built = PcrSelection::new(vec![
        BankSelection::new(HashAlg::Sha256, &[22, 0, 7]).unwrap()
    ])
    .unwrap();
    assert_eq!(
        built.marshal(),
        selection_bytes(&[(0x000b, &[0x81, 0x00, 0x40])])
    );
    assert!(BankSelection::new(HashAlg::Sha256, &[24]).is_none());
}

#[test]
fn pcr_selection_bounds() {
    let mut too_many = Writer::new();
    too_many.u32(17);
    assert_eq!(
        PcrSelection::parse(too_many.as_slice()),
        Err(ParseError::TooLarge {
            structure: "TPML_PCR_SELECTION",
            field: "count",
            len: 17,
            max: 16
        })
    );
    let mut huge = Writer::new();
    huge.u32(u32::MAX);
    assert!(matches!(
        PcrSelection::parse(huge.as_slice()),
        Err(ParseError::TooLarge { .. })
    ));
    assert!(matches!(
        PcrSelection::parse(&selection_bytes(&[(0x000b, &[0; 5])])),
        Err(ParseError::TooLarge {
            structure: "TPMS_PCR_SELECTION",
            field: "pcrSelect",
            len: 5,
            max: 4
        })
    ));
    assert_eq!(
        PcrSelection::parse(&selection_bytes(&[(0x0012, &[1, 0, 0])])),
        Err(ParseError::UnknownAlgorithm {
            structure: "TPMS_PCR_SELECTION",
            field: "hash",
            alg: 0x12
        })
    );
    assert!(matches!(
        PcrSelection::parse(&selection_bytes(&[(0x000b, &[0, 0, 0, 1])])),
        Err(ParseError::InvalidValue {
            field: "pcrSelect",
            value: 1,
            ..
        })
    ));
    assert!(matches!(
        PcrSelection::parse(&selection_bytes(&[
            (0x000b, &[1, 0, 0]),
            (0x000b, &[2, 0, 0])
        ])),
        Err(ParseError::InvalidValue { value: 0x0b, .. })
    ));
    // Count says 2, only one bank present.
    let mut b = selection_bytes(&[(0x000b, &[1, 0, 0])]);
    b[3] = 2;
    assert!(matches!(
        PcrSelection::parse(&b),
        Err(ParseError::Truncated { .. })
    ));
}

#[test]
fn pcr_digest_of_empty_selection_is_hash_of_nothing() {
    let s = PcrSelection::parse(&selection_bytes(&[])).unwrap();
    assert!(s.is_empty());
    assert_eq!(
        s.digest(HashAlg::Sha256, &PcrValues::new()).unwrap(),
        HashAlg::Sha256.hash(b"")
    );
}

#[test]
fn attest_other_types_round_trip() {
    let clock = ClockInfo {
        clock: 1,
        reset_count: 2,
        restart_count: 3,
        safe: true,
    };
    for attested in [
        Attested::Certify {
            name: vec![0, 11, 1, 2],
            qualified_name: vec![0, 11, 3],
        },
        Attested::Creation {
            object_name: vec![0, 11, 9],
            creation_hash: vec![5; 32],
        },
        Attested::Other {
            tag: 0x8019,
            body: vec![1, 2, 3, 4],
        },
    ] {
        let a = Attest {
            magic: TPM_GENERATED_VALUE,
            qualified_signer: vec![0, 11, 7],
            extra_data: b"nonce".to_vec(),
            clock_info: clock,
            firmware_version: 9,
            attested,
        };
        let b = a.marshal();
        assert_eq!(Attest::parse(&b).unwrap(), a);
        let mut w = Writer::new();
        w.tpm2b(&b);
        let (p, inner) = Attest::parse_tpm2b(w.as_slice()).unwrap();
        assert_eq!((p, inner), (a, b.as_slice()));
    }
}

#[test]
fn attest_unknown_type_and_oversized_name() {
    let mut w = Writer::new();
    w.u32(TPM_GENERATED_VALUE).u16(0x8030);
    w.tpm2b(&[]).tpm2b(&[]).u64(0).u32(0).u32(0).u8(1).u64(0);
    assert_eq!(
        Attest::parse(w.as_slice()),
        Err(ParseError::InvalidValue {
            structure: "TPMS_ATTEST",
            field: "type",
            value: 0x8030
        })
    );
    let mut w = Writer::new();
    w.u32(TPM_GENERATED_VALUE).u16(0x8018).tpm2b(&[0; 67]);
    assert!(matches!(
        Attest::parse(w.as_slice()),
        Err(ParseError::TooLarge {
            field: "qualifiedSigner",
            len: 67,
            max: 66,
            ..
        })
    ));
}
