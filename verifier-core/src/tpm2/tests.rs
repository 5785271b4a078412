use super::*;
use crate::wire::HashAlg;

/// A success response to `code` with `params` and, for session commands, one empty
/// password acknowledgement.
fn ok_response(handle: Option<u32>, params: &[u8], sessions: bool) -> Vec<u8> {
    let mut body = Writer::new();
    if let Some(h) = handle {
        body.u32(h);
    }
    if sessions {
        body.u32(u32::try_from(params.len()).unwrap());
        body.bytes(params);
        body.u16(0).u8(1).u16(0);
    } else {
        body.bytes(params);
    }
    let body = body.into_vec();
    let mut w = Writer::new();
    let tag = if sessions {
        ST_SESSIONS
    } else {
        ST_NO_SESSIONS
    };
    w.u16(tag)
        .u32(u32::try_from(body.len() + HEADER_SIZE).unwrap())
        .u32(0)
        .bytes(&body);
    w.into_vec()
}

#[test]
fn password_command_bytes() {
    let mut c = Command::new(CommandCode::PcrExtend)
        .handle(15)
        .auth(Auth::password());
    c.params().u32(0);
    assert_eq!(
        hex::encode(c.marshal()),
        // tag, size 31, cc, PCR 15, auth size 9: TPM_RS_PW, empty nonce, attrs 0, empty
        // hmac; count 0.
        "80020000001f000001820000000f0000000940000009000000000000000000"
    );
}

#[test]
fn no_session_command_has_no_auth_area() {
    let mut c = Command::new(CommandCode::FlushContext);
    c.params().u32(0x8000_0001);
    assert_eq!(hex::encode(c.marshal()), "80010000000e0000016580000001");
}

#[test]
fn response_size_must_match_the_bytes_read() {
    let mut r = ok_response(None, &[], false);
    r.push(0);
    assert!(matches!(
        Response::parse(&r, CommandCode::FlushContext, false),
        Err(ResponseError::Parse(_))
    ));
    // A size field claiming more than was read.
    let mut r = ok_response(None, &[], false);
    r.truncate(r.len() - 1);
    assert!(Response::parse(&r, CommandCode::FlushContext, false).is_err());
}

#[test]
fn error_code_is_reported_and_classified() {
    let r = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8b];
    let err = Response::parse(&r, CommandCode::ReadPublic, false).unwrap_err();
    assert_eq!(err, ResponseError::Code(0x18b));
    assert!(err.is_missing_handle());
    // TPM_RC_VALUE on a parameter is not a missing handle.
    assert!(!ResponseError::Code(0x1c4).is_missing_handle());
    // An error response with trailing bytes is malformed.
    let r = [0x80, 0x01, 0, 0, 0, 11, 0, 0, 0x01, 0x8b, 0];
    assert!(matches!(
        Response::parse(&r, CommandCode::ReadPublic, false),
        Err(ResponseError::Parse(_))
    ));
}

#[test]
fn session_tag_must_match_the_command() {
    let r = ok_response(None, &[], false);
    assert!(Response::parse(&r, CommandCode::PcrExtend, true).is_err());
    let r = ok_response(None, &[], true);
    assert!(Response::parse(&r, CommandCode::FlushContext, false).is_err());
    let r = ok_response(None, &[], true);
    assert!(Response::parse(&r, CommandCode::PcrExtend, true).is_ok());
}

#[test]
fn parameter_size_lie_is_refused() {
    let mut r = ok_response(None, &[1, 2, 3], true);
    // parameterSize (offset 10) claims more than the response holds.
    r[13] = 200;
    assert!(Response::parse(&r, CommandCode::NvRead, true).is_err());
}

fn ecc_public() -> Public {
    use crate::wire::{EccCurve, KdfScheme, KeyScheme, ObjectAttributes, PublicKey, SymDef};
    Public::new(
        HashAlg::Sha256,
        ObjectAttributes::FIXED_TPM | ObjectAttributes::RESTRICTED,
        &[],
        PublicKey::Ecc {
            symmetric: SymDef::Null,
            scheme: KeyScheme::Null,
            curve: EccCurve::NistP256,
            kdf: KdfScheme::Null,
            x: vec![1; 32],
            y: vec![2; 32],
        },
    )
    .unwrap()
}

#[test]
fn read_public_name_must_be_the_name_of_the_public_area() {
    let public = ecc_public();
    let mut w = Writer::new();
    w.tpm2b(&public.marshal()).tpm2b(&public.name()).tpm2b(&[]);
    let ok = read_public_response(w.as_slice()).unwrap();
    assert_eq!(ok.public, public.marshal());
    assert_eq!(ok.name, public.name());

    // A forged name (another key's) next to the public area: refused.
    let mut forged = public.name();
    if let Some(b) = forged.last_mut() {
        *b ^= 1;
    }
    let mut w = Writer::new();
    w.tpm2b(&public.marshal()).tpm2b(&forged).tpm2b(&[]);
    assert!(matches!(
        read_public_response(w.as_slice()),
        Err(ResponseError::Inconsistent(_))
    ));
    // Trailing bytes: refused.
    let mut w = Writer::new();
    w.tpm2b(&public.marshal())
        .tpm2b(&public.name())
        .tpm2b(&[])
        .u8(0);
    assert!(read_public_response(w.as_slice()).is_err());
}

#[test]
fn pcr_read_digest_count_must_match_the_selection() {
    let sel = PcrSelection::new(vec![crate::wire::BankSelection::new(
        HashAlg::Sha256,
        &[0, 1],
    )
    .unwrap()])
    .unwrap();
    let mut w = Writer::new();
    w.u32(7);
    sel.write(&mut w);
    w.u32(1).tpm2b(&[0; 32]);
    assert!(matches!(
        pcr_read_response(w.as_slice()),
        Err(ResponseError::Inconsistent(_))
    ));
    let mut w = Writer::new();
    w.u32(7);
    sel.write(&mut w);
    w.u32(2).tpm2b(&[0; 32]).tpm2b(&[1; 32]);
    let r = pcr_read_response(w.as_slice()).unwrap();
    assert_eq!(r.update_counter, 7);
    assert_eq!(r.digests.len(), 2);
    // More digests than a TPML_DIGEST holds: refused before reading them.
    let mut w = Writer::new();
    w.u32(7);
    sel.write(&mut w);
    w.u32(u32::MAX);
    assert!(matches!(
        pcr_read_response(w.as_slice()),
        Err(ResponseError::Parse(ParseError::TooLarge { .. }))
    ));
}

#[test]
fn capability_responses() {
    let mut w = Writer::new();
    // SHA-1 empty, SHA-256 allocated, SM3 (unknown to us) allocated.
    w.u8(0).u32(CAP_PCRS).u32(3);
    w.u16(0x0004).u8(3).bytes(&[0, 0, 0]);
    w.u16(0x000b).u8(3).bytes(&[0xff, 0xff, 0xff]);
    w.u16(0x0012).u8(3).bytes(&[0xff, 0xff, 0xff]);
    assert_eq!(
        pcr_banks_response(w.as_slice()).unwrap(),
        vec![0x000b, 0x0012]
    );

    let mut w = Writer::new();
    w.u8(0)
        .u32(CAP_TPM_PROPERTIES)
        .u32(1)
        .u32(PT_NV_BUFFER_MAX)
        .u32(1024);
    assert_eq!(
        tpm_property_response(w.as_slice(), PT_NV_BUFFER_MAX).unwrap(),
        Some(1024)
    );
    assert_eq!(tpm_property_response(w.as_slice(), 0x12d).unwrap(), None);
    // The other capability where PCRS was asked for.
    assert!(pcr_banks_response(w.as_slice()).is_err());
}

#[test]
fn nv_read_public_must_describe_the_index_asked_for() {
    let mut inner = Writer::new();
    inner
        .u32(0x01c0_000a)
        .u16(0x000b)
        .u32(0)
        .tpm2b(&[])
        .u16(700);
    let mut w = Writer::new();
    w.tpm2b(inner.as_slice()).tpm2b(&[0; 34]);
    assert_eq!(
        nv_read_public_response(w.as_slice(), 0x01c0_000a).unwrap(),
        700
    );
    assert!(matches!(
        nv_read_public_response(w.as_slice(), 0x01c0_0002),
        Err(ResponseError::Inconsistent(_))
    ));
}

#[test]
fn fuzz_entry_point_survives_garbage() {
    for code in ALL_CODES {
        for len in 0u32..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| u8::try_from((i * 37 + len) % 256).unwrap())
                .collect();
            fuzz_decode(code, len % 2 == 0, &bytes);
        }
    }
}

#[test]
fn der_values_split_back_to_back_and_refuse_the_rest() {
    // Two SEQUENCEs: short form (3 bytes of content) and long form (0x81, 130 bytes).
    let mut two = vec![0x30, 0x03, 1, 2, 3, 0x30, 0x81, 130];
    two.extend_from_slice(&[7u8; 130]);
    let parts = split_der_values(&two).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0], &[0x30, 0x03, 1, 2, 3]);
    assert_eq!(parts[1].len(), 133);
    assert_eq!(split_der_values(&[]).unwrap().len(), 0);
    // Not a SEQUENCE, a length running past the end, a trailing byte, an indefinite or
    // over-long length: refused, never a panic.
    for bad in [
        &[0x04, 0x01, 0][..],
        &[0x30, 0x05, 1, 2][..],
        &[0x30, 0x01, 1, 0xff][..],
        &[0x30, 0x80, 0, 0][..],
        &[0x30, 0x85, 1, 1, 1, 1, 1][..],
        &[0x30][..],
        &[0x30, 0x82, 0xff][..],
    ] {
        assert!(split_der_values(bad).is_none(), "{bad:02x?}");
    }
}
