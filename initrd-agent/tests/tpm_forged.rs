//! A TPM (or whatever answers on its socket or bus) that lies: the agent refuses its
//! answers instead of using them. A fake swtpm on a local port answers each command with
//! bytes the test forges.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use initrd_agent::tpm::{EkKind, Tpm, TpmError};
use verifier_core::tpm2::ResponseError;
use verifier_core::wire::Writer;

/// Serves one connection: reads each command and answers with the next of `answers`.
fn fake_tpm(answers: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for answer in answers {
            let mut header = [0u8; 10];
            if s.read_exact(&mut header).is_err() {
                return;
            }
            let size = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
            let mut rest = vec![0u8; size - 10];
            s.read_exact(&mut rest).unwrap();
            s.write_all(&answer).unwrap();
        }
    });
    format!("swtpm:host=127.0.0.1,port={port}")
}

/// A success response without sessions carrying `params`.
fn response(params: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(0x8001)
        .u32(u32::try_from(params.len() + 10).unwrap())
        .u32(0)
        .bytes(params);
    w.into_vec()
}

/// A P-256 public area as the TPM would marshal it (arbitrary point).
fn ecc_public() -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(0x0023).u16(0x000b).u32(0x0003_00b2);
    w.tpm2b(&[0xaa; 32]);
    w.u16(0x0006).u16(128).u16(0x0043);
    w.u16(0x0010).u16(0x0003).u16(0x0010);
    w.tpm2b(&[1; 32]).tpm2b(&[2; 32]);
    w.into_vec()
}

#[test]
fn a_name_that_is_not_the_hash_of_the_public_area_is_refused() {
    // ReadPublic of the persistent EK: the public area of one key with the name of
    // another (what an interposer swapping keys would produce).
    let public = ecc_public();
    let mut forged_name = vec![0x00, 0x0b];
    forged_name.extend_from_slice(&[0x55; 32]);
    let mut p = Writer::new();
    p.tpm2b(&public).tpm2b(&forged_name).tpm2b(&forged_name);
    let tcti = fake_tpm(vec![response(p.as_slice())]);
    let mut tpm = Tpm::open(&tcti).unwrap();
    let err = tpm.persistent_ek_id(EkKind::EccP256).unwrap_err();
    assert!(
        matches!(
            err,
            TpmError::Command {
                source: ResponseError::Inconsistent(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_response_announcing_more_than_a_tpm_can_send_is_refused_before_reading_it() {
    // responseSize 0x7fffffff: no allocation of that size, an error.
    let tcti = fake_tpm(vec![vec![0x80, 0x01, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]]);
    let mut tpm = Tpm::open(&tcti).unwrap();
    let err = tpm.active_banks().unwrap_err();
    assert!(matches!(err, TpmError::Transport { .. }), "{err}");
}

#[test]
fn trailing_bytes_and_truncated_parameters_are_refused() {
    // GetCapability(PCRS) answered with one bank and a stray byte after it, then with a
    // bank whose pcrSelect runs past the end.
    let mut good = Writer::new();
    good.u8(0)
        .u32(5)
        .u32(1)
        .u16(0x000b)
        .u8(3)
        .bytes(&[0xff, 0xff, 0xff]);
    let mut trailing = good.as_slice().to_vec();
    trailing.push(0);
    let mut truncated = Writer::new();
    truncated
        .u8(0)
        .u32(5)
        .u32(1)
        .u16(0x000b)
        .u8(3)
        .bytes(&[0xff]);
    let tcti = fake_tpm(vec![
        response(good.as_slice()),
        response(&trailing),
        response(truncated.as_slice()),
    ]);
    let mut tpm = Tpm::open(&tcti).unwrap();
    assert_eq!(
        tpm.active_banks().unwrap(),
        vec![verifier_core::wire::HashAlg::Sha256]
    );
    assert!(tpm.active_banks().is_err());
    assert!(tpm.active_banks().is_err());
}
